"""A voice per language (issue #20): each reply piece split by script, Hangul never read by an English voice, and
the turn log saying which voices spoke. Real weights: the voice joe, espeak-ng's Korean, Whisper base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plush.server.speech import SpeechOut
from plush.voice_models.espeak_voice import EspeakVoice
from plush.voice_models.language_parts import language_parts
from plush.voice_models.tts import Synthesizer

MIXED = "토끼는 영어로 rabbit이야. Rabbits love carrots!"
FALLBACK = "espeak-ng ko (built-in fallback)"


def test_a_mixed_reply_is_cut_where_the_language_changes_and_not_at_an_english_word() -> None:
    assert language_parts(MIXED, "ko") == [("ko", "토끼는 영어로 rabbit이야."), ("en", "Rabbits love carrots!")]
    assert language_parts("Hello! 안녕? 123. Bye.", "en") == [("en", "Hello!"), ("ko", "안녕? 123."), ("en", "Bye.")]
    assert language_parts("... 😀", "ko") == [("ko", "... 😀")]


def test_espeak_ng_speaks_korean_as_audio_a_piper_turn_can_take() -> None:
    pcm = EspeakVoice("ko").synthesize("안녕, 나는 모모야.")
    assert len(pcm) > 2 * 22050 * 0.5, "half a second of speech or more"
    assert EspeakVoice("ko").synthesize("  ") == b""


@pytest.mark.real_weights
async def test_each_part_of_a_mixed_reply_is_spoken_by_the_voice_for_its_language(real_joe_voice: Path) -> None:
    joe = Synthesizer(real_joe_voice)
    speech = SpeechOut(joe, 100)
    assert speech.voice_for("en") is joe and speech.voice_for("ko").label == FALLBACK
    spoken_by: set[str] = set()
    chunks = await speech.speak(MIXED, 22050, spoken_by=spoken_by)
    assert spoken_by == {"en_US-joe-medium", FALLBACK}  # before: joe read the Hangul
    pcm = b"".join(chunks)
    korean = EspeakVoice("ko").synthesize("토끼는 영어로 rabbit이야.")  # espeak-ng is deterministic; Piper is not
    assert pcm[: len(korean)] == korean, "the Korean sentence first, in espeak-ng's Korean"
    assert len(pcm) - len(korean) > 2 * 22050 * 0.5, "then the English one, in joe's voice"

    only_english: set[str] = set()
    await speech.speak("Rabbits love carrots!", 22050, spoken_by=only_english)
    assert only_english == {"en_US-joe-medium"}


@pytest.mark.real_weights
async def test_in_a_spoken_korean_turn_hangul_is_spoken_in_korean_and_the_log_says_which_voice(
    start_gemini_server: Any, fake_gemini: Any, real_joe_voice: Path, real_whisper_base: Path
) -> None:
    from plush.device.client import CompanionClient
    from plush.protos.plush.v1 import companion_pb2 as pb
    from plush.voice_models.audio import WHISPER_RATE, resample_pcm16

    persona = Path(__file__).parents[1] / "plush" / "server" / "personas" / "ko.toml"
    server = await start_gemini_server(
        tts={"voice": str(real_joe_voice)},
        stt={"model": str(real_whisper_base), "language": "ko"},
        server={"port": 0, "persona": str(persona)},
    )
    fake_gemini.reply("안녕! 나는 모모야. ", "Rabbits love carrots!")
    question = EspeakVoice("ko").synthesize("안녕하세요. 오늘 같이 놀래요? 토끼 이야기를 해 주세요.")  # spoken
    quiet = bytes(WHISPER_RATE)  # half a second of silence either side, as a press and a release leave
    pcm = quiet + resample_pcm16(question, 22050, WHISPER_RATE) + quiet
    async with CompanionClient(f"127.0.0.1:{server.port}", "korean-plush") as client:
        call = await client.converse(pb.TurnStart(want_audio=True), pcm=pcm, sample_rate=WHISPER_RATE)
        events = [e async for e in call.events()]
    assert any(e.WhichOneof("kind") == "audio" for e in events)
    await server.companion.wait_stored()
    [turn] = await server.companion.store.list_turns()
    assert turn.source == "device" and turn.outcome == "answered" and turn.user_text, turn
    # The Hangul by the Korean voice, the English sentence by joe; the log records both (before: joe read it all).
    assert turn.voices == f"en_US-joe-medium, {FALLBACK}", turn


@pytest.mark.real_weights
def test_every_phoneme_of_the_korean_prompt_set_is_in_the_phoneme_map_a_korean_fine_tune_uses(
    real_joe_voice: Path,
) -> None:
    """A symbol missing from the map would be dropped from every training sentence without a word."""
    import json

    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
    from piper.phonemize_espeak import EspeakPhonemizer

    from plush.voice_models.cloning.prompts import builtin_prompts

    prompts = [prompt.text for prompt in builtin_prompts("ko")]
    phonemizer = EspeakPhonemizer()
    emitted = {symbol for text in prompts for sentence in phonemizer.phonemize("ko", text) for symbol in sentence}
    assert len(prompts) > 250 and len(emitted) > 20
    joe_map = json.loads(Path(f"{real_joe_voice}.json").read_text(encoding="utf-8"))["phoneme_id_map"]
    assert sorted(emitted - set(joe_map)) == [], "a fine-tune from joe (the warm start's map)"
    assert sorted(emitted - set(DEFAULT_PHONEME_ID_MAP)) == [], "a fine-tune from an official checkpoint"
