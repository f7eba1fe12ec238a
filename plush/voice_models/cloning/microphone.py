"""The microphone for recording takes: sounddevice (PortAudio) capture between `start()` and `stop()`.

The plush has its own capture in `plush.device`, but the shared speech layer may not import the device side, and
a recording session wants other things from it: a higher rate than Whisper's 16 kHz (the voice is trained at
22,050 Hz, so takes are kept at 48 kHz and resampled once, in `prepare`), a live level for the meter, and a cap
on the length of one take. PortAudio fills the buffer from its own thread.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from plush.errors import PlushError
from plush.voice_models.audio import FloatAudio

RECORD_RATE = 48000
"""Takes are recorded at this rate (every sound card and PulseAudio offer it)."""


class MicrophoneError(PlushError):
    """The microphone cannot be opened."""


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise MicrophoneError(
            "recording needs sounddevice and PortAudio: pip install 'plush[voice]' and apt-get install libportaudio2"
        ) from exc
    return sounddevice


class Microphone:
    """Records mono float32 audio; one take at a time."""

    def __init__(self, *, sample_rate: int = RECORD_RATE, device: str | None = None, max_seconds: float = 30.0):
        self.sample_rate = sample_rate
        self._device: int | str | None = int(device) if device and device.isdigit() else (device or None)
        self._max_samples = int(max_seconds * sample_rate)
        self._blocks: list[FloatAudio] = []
        self._count = 0
        self._level = 0.0
        self._lock = threading.Lock()
        self._stream: Any = None

    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        block = np.array(indata[:, 0], dtype=np.float32)
        with self._lock:
            room = self._max_samples - self._count
            if room <= 0:
                return
            block = block[:room]
            self._blocks.append(block)
            self._count += len(block)
            self._level = float(np.max(np.abs(block))) if block.size else 0.0

    @property
    def level(self) -> float:
        """Peak of the latest block (0..1), for a level meter."""
        with self._lock:
            return self._level

    @property
    def seconds(self) -> float:
        """Audio recorded so far in this take."""
        with self._lock:
            return self._count / self.sample_rate

    def start(self) -> None:
        sd = _sounddevice()
        with self._lock:
            self._blocks, self._count, self._level = [], 0, 0.0
        try:
            self._stream = sd.InputStream(
                samplerate=self.sample_rate, channels=1, dtype="float32", device=self._device, callback=self._callback
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise MicrophoneError(f"cannot open the microphone ({self._device or 'default'}): {exc}") from exc

    def stop(self) -> FloatAudio:
        """Stop and return the take (empty when nothing was recorded)."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        with self._lock:
            blocks, self._blocks = self._blocks, []
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
