"""`check`: is a new voice fast enough and understandable? Measured beside the voice it was trained from.

Two numbers per voice: the real-time factor (seconds of synthesis per second of speech on this machine; under 1
keeps up with the LLM) and a round-trip score: Whisper hears a few test sentences spoken in the voice, and the
character error rate against the text says how understandable it is (CER, not WER: fair to Korean). Whisper
mishears even good voices a little, so the base voice's score on the same sentences, with the same Whisper, is
the yardstick: a clone that scores far worse than its base learned noise or mumbling.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plush.logs import get_logger
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.cloning.deep_check import DeepReport
from plush.voice_models.speech_scoring import character_error_rate
from plush.voice_models.stt import Transcriber
from plush.voice_models.tts import Synthesizer

log = get_logger(__name__)

TEST_SENTENCES = {
    "en": (
        "Good morning! Did you sleep well last night?",
        "The little bear wants to build a castle out of blocks.",
        "Let's count the stars together before bedtime.",
    ),
    "ko": (
        "안녕하세요! 오늘 기분이 어때요?",
        "작은 곰이 블록으로 성을 만들고 싶어요.",
        "잠자기 전에 같이 별을 세어 봐요.",
    ),
}
"""Sentences the voice never trained on (the prompt sets are different), short as Plush's replies are."""


@dataclass(frozen=True)
class HeardSentence:
    text: str
    heard: str
    cer: float


@dataclass(frozen=True)
class VoiceScore:
    voice: str
    real_time_factor: float
    cer: float
    """Mean character error rate over the test sentences (0 is perfect)."""
    audio_seconds: float
    sentences: tuple[HeardSentence, ...]


@dataclass(frozen=True)
class CheckReport:
    voice: VoiceScore
    base: VoiceScore | None
    language: str
    deep: DeepReport | None = None
    """`check --deep`'s reconstruction, held-out CER and speaker similarity, when asked for."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_voice(
    onnx: Path, transcriber: Transcriber, language: str, sentences: tuple[str, ...] | None = None
) -> VoiceScore:
    """Speak each sentence with the voice, time it, and let Whisper hear it back."""
    sentences = sentences or TEST_SENTENCES.get(language, TEST_SENTENCES["en"])
    voice = Synthesizer(onnx)
    voice.synthesize(sentences[0][:12])  # the first run allocates ONNX Runtime's buffers: keep it out of the RTF
    heard: list[HeardSentence] = []
    synth_s = audio_s = 0.0
    for text in sentences:
        started = time.perf_counter()
        pcm = voice.synthesize(text)
        synth_s += time.perf_counter() - started
        audio_s += len(pcm) / 2 / voice.sample_rate
        audio = pcm16_to_float(resample_pcm16(pcm, voice.sample_rate, WHISPER_RATE))
        result = transcriber.transcribe(audio, language=language) if audio.size else None
        said = result.text if result is not None else ""
        heard.append(HeardSentence(text, said, character_error_rate(text, said)))
    score = VoiceScore(
        voice=onnx.stem,
        real_time_factor=synth_s / audio_s if audio_s else float("inf"),
        cer=sum(h.cer for h in heard) / len(heard),
        audio_seconds=audio_s,
        sentences=tuple(heard),
    )
    log.info("voice_scored", voice=score.voice, rtf=round(score.real_time_factor, 3), cer=round(score.cer, 3))
    return score


def check_voice(onnx: Path, transcriber: Transcriber, language: str, *, base: Path | None = None) -> CheckReport:
    """The new voice's score, and its base voice's on the same sentences (when the base is at hand)."""
    new = score_voice(onnx, transcriber, language)
    base_score = score_voice(base, transcriber, language) if base is not None and base.is_file() else None
    return CheckReport(new, base_score, language)
