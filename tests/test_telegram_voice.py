"""Voice notes through the Telegram bridge, on the real weights: a question spoken by the real Piper voice (joe)
is sent as an OGG/Opus voice note, heard by the server's real Whisper base, answered by the companion (the fake
Gemini), and comes back as a voice note in joe's voice that Whisper hears as the reply. Bad notes get a clear
answer and no crash. The real python-telegram-bot Application talks to the fake Bot API (fakes/telegram.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.telegram import FakeTelegram
from test_telegram import OWNER, REPLY, wait_for

from plush.server.telegram.bridge import TelegramBridge
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float
from plush.voice_models.ogg_opus import decode_voice_note, encode_voice_note
from plush.voice_models.speech_scoring import character_error_rate, word_error_rate
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer

pytestmark = pytest.mark.real_weights
QUESTION = "Can you tell me a story about a rabbit?"


@pytest.fixture
def fake_telegram() -> Any:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def voice_bot(
    start_gemini_server: Any,
    make_config: Any,
    *,
    fake_telegram: FakeTelegram,
    real_whisper_base: Path,
    real_joe_voice: Path,
    tmp_path: Path,
) -> AsyncIterator[Any]:
    """A server speaking with joe and hearing with Whisper base, its bot keeping voice notes; yields the server."""
    settings = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url, "keep_voice_notes": True}
    sections = {"tts": {"voice": str(real_joe_voice)}, "stt": {"model": str(real_whisper_base)}}
    server = await start_gemini_server(telegram=settings, **sections)
    config = make_config(telegram=settings)
    bridge = TelegramBridge(
        server.companion, config.telegram, config.owners, transcriber=server.transcriber, state_dir=tmp_path
    )
    async with bridge.polling(fake_telegram.token, poll_timeout=1):
        yield server


@pytest.fixture(scope="module")
def spoken_question(real_joe_voice: Path) -> bytes:
    voice = Synthesizer(real_joe_voice)
    pcm = np.frombuffer(voice.synthesize(QUESTION), dtype=np.int16)
    return encode_voice_note(pcm, voice.sample_rate).data


async def test_a_voice_note_is_heard_and_answered_with_a_voice_note_in_the_companions_voice(
    voice_bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any, spoken_question: bytes, real_whisper_base: Path
) -> None:
    fake_telegram.send_voice(OWNER, spoken_question)
    [note] = await wait_for(lambda: fake_telegram.voices_to(OWNER), within_s=60)
    assert fake_telegram.texts_to(OWNER) == []  # "auto": a voice note is answered by voice only
    assert [c.params["action"] for c in fake_telegram.calls_to("sendChatAction", OWNER)] == ["record_voice"]

    await voice_bot.companion.wait_stored()
    [turn] = await voice_bot.companion.store.list_turns()
    assert turn.source == "telegram" and turn.reply_text == REPLY
    assert word_error_rate(QUESTION, turn.user_text) <= 0.15, turn.user_text
    assert {"voice_note", "stt"} <= set(turn.timings)

    assert note.data[:4] == b"OggS"
    pcm = decode_voice_note(note.data, max_seconds=60)
    seconds = pcm.size / WHISPER_RATE
    assert note.duration == max(1, int(np.ceil(seconds - 0.05)))  # Telegram's duration: whole seconds, rounded up
    heard = Transcriber(real_whisper_base, options=SttOptions(language="en")).transcribe(pcm16_to_float(pcm.tobytes()))
    assert character_error_rate(REPLY, heard.text) <= 0.3, heard.text

    kept = list((Path(os.environ["XDG_DATA_HOME"]) / "plush" / "telegram" / "voice_notes" / str(OWNER)).iterdir())
    assert [path.read_bytes() for path in kept] == [spoken_question]


async def test_voice_both_answers_a_text_with_text_and_a_voice_note(
    voice_bot: Any, fake_telegram: FakeTelegram
) -> None:
    fake_telegram.send_text(OWNER, "/voice both")
    fake_telegram.send_text(OWNER, "hello")
    await wait_for(lambda: fake_telegram.voices_to(OWNER), within_s=60)
    assert fake_telegram.texts_to(OWNER)[-1] == REPLY


@pytest.mark.parametrize(
    ("data", "duration", "expected"),
    [
        (b"", 1, "empty"),
        (b"this is a text file, not a recording" * 20, 2, "not audio I can read"),
        (b"OggS" + bytes(range(256)) * 8, 2, "not audio I can read"),
        (None, 1000, "too long for me"),
    ],
    ids=["empty", "text", "broken-ogg", "too-long"],
)
async def test_a_bad_voice_note_gets_a_clear_answer_and_no_crash(
    voice_bot: Any,
    fake_telegram: FakeTelegram,
    *,
    fake_gemini: Any,
    spoken_question: bytes,
    data: bytes | None,
    duration: int,
    expected: str,
) -> None:
    fake_telegram.send_voice(OWNER, spoken_question if data is None else data, duration=duration)
    [answer] = await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=30)
    assert expected in answer
    assert fake_gemini.requests == []
    if data is None:
        assert fake_telegram.downloads == []  # refused from what Telegram said, before downloading
    await voice_bot.companion.wait_stored()
    [turn] = await voice_bot.companion.store.list_turns()  # before: no turn was stored
    assert (turn.source, turn.outcome) == ("telegram", "refused") and expected in turn.error
    fake_telegram.send_text(OWNER, "/help")  # and the bot goes on
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)


async def test_a_voice_note_telegram_will_not_hand_over_is_stored_as_an_error_and_the_owner_told(
    voice_bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any, spoken_question: bytes
) -> None:
    fake_telegram.fail_for("getFile", 502)
    fake_telegram.send_voice(OWNER, spoken_question)
    [answer] = await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=30)
    assert answer == "I couldn't get that voice note from Telegram. Send it again?"
    await voice_bot.companion.wait_stored()
    [turn] = await voice_bot.companion.store.list_turns()  # before: no reply and no row
    assert turn.outcome == "error" and "could not fetch the voice note from Telegram" in turn.error
    assert fake_gemini.requests == []


async def test_a_silent_voice_note_is_stored_as_no_speech_and_not_answered_by_a_brain(
    voice_bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    hiss = np.random.default_rng(7).normal(0, 100, 48000 * 3).astype(np.int16)  # a quiet room, no words
    silence = encode_voice_note(hiss, 48000).data
    fake_telegram.send_voice(OWNER, silence)
    [answer] = await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=30)
    assert answer == "I couldn't hear any words in that. Try again?"
    assert fake_gemini.requests == []
    await voice_bot.companion.wait_stored()
    [turn] = await voice_bot.companion.store.list_turns()  # before: no `no_speech` row
    assert turn.outcome == "no_speech"
