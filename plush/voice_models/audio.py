"""Audio formats: 16-bit PCM <-> float, WAV files, resampling (soxr) and chunking for streaming.

All PCM in Plush is mono signed 16-bit little-endian unless a message says otherwise; Whisper wants float32 at
16 kHz and Piper speaks at its voice's own rate, so these helpers sit between them.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from plush.errors import AudioFormatError

WHISPER_RATE = 16000
FloatAudio = npt.NDArray[np.float32]


def pcm16_to_float(pcm: bytes) -> FloatAudio:
    """Mono s16le bytes -> float32 in [-1, 1)."""
    if len(pcm) % 2:
        raise AudioFormatError(f"PCM s16le must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: npt.NDArray[np.floating]) -> bytes:
    """float in [-1, 1] -> mono s16le bytes (clipped)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def scale_pcm16(pcm: bytes, gain: float) -> bytes:
    """Mono s16le made louder or quieter by `gain` (clipped at full scale); 1.0 returns it untouched."""
    if gain == 1.0 or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * gain
    return bytes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample mono s16le with soxr (high quality, streaming-safe for whole chunks)."""
    if from_rate == to_rate or not pcm:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype="<i2")
    return np.asarray(soxr.resample(samples, from_rate, to_rate), dtype="<i2").tobytes()


def duration_s(pcm: bytes, sample_rate: int, channels: int = 1) -> float:
    """Length of s16le audio in seconds."""
    return len(pcm) / (2 * channels * sample_rate)


def chunk_pcm(pcm: bytes, sample_rate: int, chunk_ms: int) -> Iterator[bytes]:
    """Cut s16le audio into chunks of `chunk_ms` (the last one shorter), on sample boundaries."""
    step = max(2, int(sample_rate * chunk_ms / 1000) * 2)
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]


class PcmResampleStream:
    """Resamples mono s16le that arrives in pieces (a microphone at 48 kHz feeding 16 kHz STT) with soxr's
    streaming resampler, so piece boundaries leave no clicks; `flush` returns what the filter still holds."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        import soxr

        self._same = from_rate == to_rate
        self._stream = None if self._same else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16")

    def feed(self, pcm: bytes, *, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return bytes(self._stream.resample_chunk(samples, last=last).astype("<i2").tobytes())

    def flush(self) -> bytes:
        return self.feed(b"", last=True)


def read_audio_file(path: Path, sample_rate: int = WHISPER_RATE) -> bytes:
    """Any audio file PyAV can decode (WAV, FLAC, MP3, OGG ...) -> mono s16le at `sample_rate`."""
    if not path.is_file():
        raise AudioFormatError(f"audio file not found: {path}")
    try:
        from faster_whisper.audio import decode_audio
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise AudioFormatError("reading audio files needs faster-whisper: pip install 'plush[device]'") from exc
    try:
        audio = decode_audio(str(path), sampling_rate=sample_rate)
    except Exception as exc:  # PyAV raises many types for undecodable input
        raise AudioFormatError(f"cannot decode {path}: {exc}") from exc
    return float_to_pcm16(audio)


def write_wav(path: Path, pcm: bytes, sample_rate: int, channels: int = 1) -> None:
    """Write s16le PCM as a WAV file (creating the parent folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file is opened here, not by `wave`: a Wave_write whose own open failed raises again when collected.
    with path.open("wb") as file, wave.open(file, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)


def read_wav(path: Path) -> tuple[bytes, int]:
    """Read a 16-bit mono WAV as (pcm, sample_rate), for tests and tools that wrote it themselves."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2 or src.getnchannels() != 1:
            raise AudioFormatError(f"{path}: expected 16-bit mono WAV")
        return src.readframes(src.getnframes()), src.getframerate()
