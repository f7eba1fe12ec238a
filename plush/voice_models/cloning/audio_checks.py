"""Checks on one take of the owner's voice: trimmed to the speech, loud enough, not clipped, quiet room, right words.

A voice learns everything in its training clips, the fan in the background and the clipped plosives included, so
a bad take is cheaper to redo at once than to find later in a voice that hisses. `check_take` measures a take
with Silero VAD (where the speech is; the rest is the room's noise floor) and plain level statistics, and, given a
Whisper model, hears whether the sentence was said (character error rate against the prompt, with a threshold per
language: Whisper base mishears more Korean than English). Each problem comes with a hint the owner can act on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from plush.voice_models.audio import WHISPER_RATE, FloatAudio
from plush.voice_models.speech_scoring import character_error_rate
from plush.voice_models.stt import Transcriber
from plush.voice_models.vad import SileroVad, SpeechSegmenter, VadOptions

SILENCE_DB = -100.0
"""Level reported for digital silence (log of zero)."""
MAX_CER = {"en": 0.25, "ko": 0.35}
"""Largest character error rate at which a take still counts as the prompt said (others: `DEFAULT_MAX_CER`)."""
DEFAULT_MAX_CER = 0.35


@dataclass(frozen=True)
class CheckLimits:
    """What a good take looks like."""

    min_speech_s: float = 0.5
    """Shorter speech is a click or a cough, not a sentence."""
    max_take_s: float = 20.0
    """Longer takes are hard to align for the trainer; read one sentence at a time."""
    min_speech_dbfs: float = -38.0
    """Speech RMS below this is too quiet: the noise would be amplified with it."""
    max_clipped: float = 0.001
    """Fraction of samples at full scale above which the take counts as clipped."""
    max_noise_dbfs: float = -45.0
    """Noise floor (RMS where nobody speaks) above this is a noisy room."""
    min_snr_db: float = 20.0
    """Speech must be this much louder than the noise floor."""
    trim_pad_ms: int = 150
    """Silence kept before and after the speech when trimming."""

    def max_cer(self, language: str) -> float:
        return MAX_CER.get(language, DEFAULT_MAX_CER)


@dataclass(frozen=True)
class TakeCheck:
    """The measurements of one take and what is wrong with it (nothing, if `ok`)."""

    seconds: float
    """Length of the trimmed take."""
    speech_s: float
    speech_dbfs: float
    peak_dbfs: float
    clipped: float
    noise_dbfs: float | None
    """None when the take had too little non-speech to measure the room (under 0.2 s)."""
    trim: tuple[int, int]
    """Start and end of the kept audio, in samples of the original take."""
    heard: str | None = None
    """What Whisper heard, when words were checked."""
    cer: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["trim"] = list(self.trim)
        return data


def db(value: float) -> float:
    """Amplitude (0..1) in dBFS, `SILENCE_DB` for silence."""
    return SILENCE_DB if value <= 1e-5 else max(SILENCE_DB, 20 * math.log10(value))


def rms(audio: FloatAudio) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def speech_segments(vad: SileroVad, audio16k: FloatAudio, pad_ms: int = 150) -> list[tuple[int, int]]:
    """Where someone speaks in 16 kHz audio: (start, end) sample pairs, padded, in order."""
    segmenter = SpeechSegmenter(vad, VadOptions(min_silence_ms=300, min_speech_ms=150, pad_ms=pad_ms))
    found = segmenter.feed(audio16k) + segmenter.finish(len(audio16k))
    return [(segment.start, segment.end) for segment in found]


def _resample(audio: FloatAudio, rate: int, to_rate: int) -> FloatAudio:
    if rate == to_rate:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, rate, to_rate), dtype=np.float32)


def check_take(
    audio: FloatAudio,
    rate: int,
    vad: SileroVad,
    *,
    limits: CheckLimits | None = None,
) -> TakeCheck:
    """Measure a take (mono float at `rate`): where the speech is, its level, clipping and the room's noise."""
    limits = limits or CheckLimits()
    audio16k = _resample(audio, rate, WHISPER_RATE)
    segments = speech_segments(vad, audio16k, limits.trim_pad_ms)
    scale = rate / WHISPER_RATE
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    clipped = float(np.mean(np.abs(audio) >= 0.995)) if audio.size else 0.0
    problems: list[str] = []
    if not segments:
        return TakeCheck(
            seconds=0.0,
            speech_s=0.0,
            speech_dbfs=SILENCE_DB,
            peak_dbfs=db(peak),
            clipped=clipped,
            noise_dbfs=db(rms(audio)),
            trim=(0, 0),
            problems=["no speech heard: check that the right microphone is on and speak a little closer"],
        )
    start, end = int(segments[0][0] * scale), min(len(audio), int(segments[-1][1] * scale))
    mask = np.zeros(len(audio16k), dtype=bool)
    for seg_start, seg_end in segments:
        mask[seg_start:seg_end] = True
    speech, rest = audio16k[mask], audio16k[~mask]
    speech_s = float(mask.sum()) / WHISPER_RATE
    speech_dbfs = db(rms(speech))
    noise_dbfs = db(rms(rest)) if rest.size >= 0.2 * WHISPER_RATE else None
    seconds = (end - start) / rate
    if speech_s < limits.min_speech_s:
        problems.append(f"only {speech_s:.1f} s of speech: read the whole sentence")
    if len(audio) / rate > limits.max_take_s:
        problems.append(f"the take is {len(audio) / rate:.0f} s long: stop recording after the sentence")
    if speech_dbfs < limits.min_speech_dbfs:
        problems.append(f"too quiet ({speech_dbfs:.0f} dBFS): speak up or move closer to the microphone")
    if clipped > limits.max_clipped:
        problems.append(f"clipped ({clipped:.1%} of samples at full scale): speak softer or turn the input gain down")
    if noise_dbfs is not None:
        if noise_dbfs > limits.max_noise_dbfs:
            problems.append(f"noisy room (noise floor {noise_dbfs:.0f} dBFS): find a quieter place, away from fans")
        elif speech_dbfs - noise_dbfs < limits.min_snr_db:
            problems.append(
                f"speech only {speech_dbfs - noise_dbfs:.0f} dB above the noise: move closer or find a quieter room"
            )
    return TakeCheck(
        seconds=seconds,
        speech_s=speech_s,
        speech_dbfs=speech_dbfs,
        peak_dbfs=db(peak),
        clipped=clipped,
        noise_dbfs=noise_dbfs,
        trim=(start, end),
        problems=problems,
    )


def check_words(
    check: TakeCheck,
    audio: FloatAudio,
    rate: int,
    text: str,
    *,
    language: str,
    transcriber: Transcriber,
    limits: CheckLimits | None = None,
) -> TakeCheck:
    """`check` with what Whisper heard in the trimmed take and whether it matches `text` closely enough."""
    limits = limits or CheckLimits()
    if not check.speech_s:
        return check
    start, end = check.trim
    heard = transcriber.transcribe(_resample(audio[start:end], rate, WHISPER_RATE), language=language).text
    cer = character_error_rate(text, heard)
    problems = list(check.problems)
    if cer > limits.max_cer(language):
        problems.append(f"the words did not match the sentence (heard: {heard!r}): read it again as written")
    return TakeCheck(**{**asdict(check), "heard": heard, "cer": round(cer, 3), "problems": problems})
