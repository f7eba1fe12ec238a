"""Speech-like test signals: voiced sounds (harmonics of a pitch under a syllable envelope) that Silero VAD takes
for speech and Whisper decodes as audio, and the silences between them. Used by tests and benchmarks."""

from __future__ import annotations

import numpy as np

from plush.voice_models.audio import WHISPER_RATE, float_to_pcm16


def voiced(seconds: float, pitch: float = 140.0) -> np.ndarray:
    """A phrase: five harmonics of `pitch`, three syllables a second, at 16 kHz."""
    t = np.arange(int(seconds * WHISPER_RATE)) / WHISPER_RATE
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    return 0.2 * envelope * sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * WHISPER_RATE))


def utterance(*parts: np.ndarray) -> bytes:
    """The parts one after another, as mono s16le at 16 kHz."""
    return float_to_pcm16(np.concatenate(parts).astype(np.float32))
