"""Decoding one utterance: one encoder pass for language and text, only the owner's languages, no endless loops.

The suite's random-weight Whisper runs through the real faster-whisper and CTranslate2 code. Random weights never
end their text, so what they write always repeats itself: just what the "fit" window's loop guard must catch.
"""

from __future__ import annotations

from typing import Any

import pytest
from speech_signals import silence, utterance, voiced
from tiny_models import TinyModels

from plush.config import load_config
from plush.errors import ConfigError
from plush.languages import WHISPER_LANGUAGE_CODES
from plush.voice_models.audio import pcm16_to_float
from plush.voice_models.loop_guard import TOKEN_SLACK, looks_like_loop, token_budget
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import SttOptions, Transcriber, pick_language

PHRASE = pcm16_to_float(utterance(voiced(1.2)))


class CountingWhisper:
    """The CTranslate2 Whisper, with the frames of every encoder call and the language detections counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.encoded_frames: list[int] = []
        self.detections = 0

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        self.encoded_frames.append(int(features.shape[-1]))
        return self.inner.encode(features, to_cpu=to_cpu)

    def detect_language(self, encoded: Any) -> Any:
        self.detections += 1
        return self.inner.detect_language(encoded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def counted(models: TinyModels, **options: Any) -> tuple[Transcriber, CountingWhisper]:
    transcriber = Transcriber(models.whisper_dir, options=SttOptions(**{"max_new_tokens": 8, **options}))
    counter = CountingWhisper(transcriber._model.model)
    transcriber._model.model = counter
    return transcriber, counter


def test_an_auto_language_utterance_is_encoded_once_for_both_detection_and_text(models: TinyModels) -> None:
    transcriber, whisper = counted(models, languages=("ko", "en"))
    result = transcriber.transcribe(PHRASE)
    assert result.text and result.language in ("ko", "en")
    assert whisper.encoded_frames == [3000], "one 30 s window, shared by the detector and the decoder"
    assert whisper.detections == 1


def test_a_fixed_language_is_never_detected(models: TinyModels) -> None:
    transcriber, whisper = counted(models, language="ko")
    assert transcriber.transcribe(PHRASE).language == "ko"
    assert whisper.encoded_frames == [3000] and whisper.detections == 0


@pytest.mark.parametrize("pitch", [90.0, 140.0, 220.0, 330.0])
def test_the_detected_language_is_always_one_the_owner_speaks(models: TinyModels, pitch: float) -> None:
    audio = pcm16_to_float(utterance(voiced(1.5, pitch)))
    anything = Transcriber(models.whisper_dir, options=SttOptions(max_new_tokens=4)).transcribe(audio).language
    allowed = ("ko", "en") if anything not in ("ko", "en") else ("de", "ja")  # never what Whisper liked best
    restricted = Transcriber(models.whisper_dir, options=SttOptions(max_new_tokens=4, languages=allowed))
    assert restricted.transcribe(audio).language in allowed


def test_the_likeliest_allowed_language_wins() -> None:
    ranked = [("ja", 0.6), ("ko", 0.3), ("en", 0.1)]
    assert pick_language(ranked, ("en", "ko")) == "ko"
    assert pick_language(ranked, ()) == "ja"
    assert pick_language(ranked, ("fr",)) == "fr", "an allowed language missing from the ranking is still allowed"


def test_a_bad_language_code_in_the_config_is_a_clear_error() -> None:
    unknown = r"stt\.languages.*'kr' is not a Whisper language code \(did you mean 'ko'\?\)"
    with pytest.raises(ConfigError, match=unknown):
        load_config(search=False, stt={"languages": ["kr", "en"]})
    with pytest.raises(ConfigError, match=r"stt\.language.*'english' is not a Whisper language code"):
        load_config(search=False, stt={"language": "english"})
    assert load_config(search=False, stt={"languages": ["en", "ko", "en"]}).stt.languages == ("en", "ko")
    assert load_config(search=False, stt={"languages": []}).stt.languages == ()


def test_the_config_knows_the_same_languages_as_faster_whisper() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert tuple(_LANGUAGE_CODES) == WHISPER_LANGUAGE_CODES


LOOPS = (  # what Whisper base wrote for Piper questions with a 1 s "fit" window, and worse
    "Can you tell me a story about a dragon? Can you tell me a story about a",
    "I am hungry. I am hungry. I am hungry",
    "How far Way How far Way How far Way How far Way How far",
    "Is it going to Is Is Is Is Is Is Is Is Is Is Is",
    "Where Where Where Rainbow Re Re Re Rainbow Re Rainbow Rainbow Rainbow Re rainbow",
    "ちゃうちゃうちゃうちゃうちゃうちゃう",
    "오, 오, 오, 오, 오, 오, 오, 오",
)
NOT_LOOPS = (
    "Can you tell me a story about a dragon?",
    "My friend Emma has a puppy and I want one too, can I have a puppy?",
    "Bye bye, see you tomorrow!",
    "What is bigger, an elephant or a whale?",
    "안녕! 나는 모모야. 오늘 기분이 어때?",
    "今日はいい天気ですね。",
    "",
)


@pytest.mark.parametrize("text", LOOPS)
def test_a_repeated_phrase_is_recognised_as_a_loop(text: str) -> None:
    assert looks_like_loop(text)


@pytest.mark.parametrize("text", NOT_LOOPS)
def test_ordinary_speech_is_not_a_loop(text: str) -> None:
    assert not looks_like_loop(text)


def test_the_token_budget_grows_with_the_audio_and_leaves_room_for_fast_korean() -> None:
    assert token_budget(0.0) == TOKEN_SLACK
    assert token_budget(1.0) < token_budget(2.0) < token_budget(30.0)
    # "안녕! 나는 모모야. 오늘 기분이 어때?" is 15 Whisper tokens; said quickly it takes about 2 s.
    assert token_budget(2.0) >= 2 * 15


def test_a_fit_window_text_that_loops_is_decoded_again_with_the_full_window(models: TinyModels) -> None:
    full = Transcriber(models.whisper_dir, options=SttOptions(language="en", max_new_tokens=24))
    fit, whisper = counted(models, language="en", max_new_tokens=24, encoder_window="fit")
    result = fit.transcribe(PHRASE)
    assert result.window == "full"
    assert result.text == full.transcribe(PHRASE).text
    assert whisper.encoded_frames == [600, 3000], "6 s (1.2 s of speech, then silence), then the full window"


def test_without_the_fallback_the_fit_window_is_one_short_encoder_pass(models: TinyModels) -> None:
    fit, whisper = counted(models, languages=("ko", "en"), encoder_window="fit", fit_fallback=False)
    result = fit.transcribe(PHRASE)
    assert result.window == "fit" and result.text and result.language in ("ko", "en")
    assert whisper.encoded_frames == [600] and whisper.detections == 1
    long_phrase = pcm16_to_float(utterance(voiced(6.0)))
    fit.transcribe(long_phrase)
    assert whisper.encoded_frames[-1] == 800, "6 s of speech and 2 s of silence"


def test_streaming_detects_the_language_once_and_keeps_it_for_later_phrases(models: TinyModels) -> None:
    transcriber, whisper = counted(models, languages=("ko", "en"))
    stt = StreamingStt(transcriber)
    three = utterance(silence(0.3), voiced(1.2), silence(0.7), voiced(1.0, 180), silence(0.6), voiced(0.8, 120))
    result, stats = stt.transcribe_segmented(three)
    assert len(stats.segments) == 3 and result.language in ("ko", "en")
    assert whisper.detections == 1
    assert len(whisper.encoded_frames) == 3


def test_audio_longer_than_a_window_keeps_to_the_owners_languages_too(models: TinyModels) -> None:
    allowed = ("ko", "en")
    transcriber = Transcriber(models.whisper_dir, options=SttOptions(max_new_tokens=4, languages=allowed))
    result = transcriber.transcribe(pcm16_to_float(utterance(voiced(31.0))))
    assert result.window == "long" and result.language in allowed
