"""Microphone and speaker through sounddevice (PortAudio): push-to-talk capture and streamed playback.

Both use PortAudio callbacks on its own thread: capture appends frames while the button is held (bounded by the
maximum utterance length), playback pulls from a buffer that the network fills, so audio plays as it arrives and
`stop_now` silences the speaker within one audio block (barge-in). Opening, starting and closing a stream block
(PortAudio talks to the sound server), so the turn loop calls these from worker threads, never the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from plush.errors import AudioFormatError, PlushError


class AudioDeviceError(PlushError):
    """The microphone or speaker cannot be opened."""


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise AudioDeviceError(
            "audio needs sounddevice and PortAudio: pip install 'plush[device]' and apt-get install libportaudio2"
        ) from exc
    return sounddevice


def _device(spec: str | None) -> int | str | None:
    if spec is None or spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


class Recorder:
    """Records mono s16le from the microphone between `start()` and `stop()`."""

    def __init__(self, sample_rate: int = 16000, device: str | None = None, max_seconds: float = 30.0) -> None:
        self.sample_rate = sample_rate
        self._device = _device(device)
        self._max_bytes = int(max_seconds * sample_rate) * 2
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._on_audio: Callable[[bytes], None] | None = None

    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        with self._lock:
            room = self._max_bytes - len(self._buffer)
            block = bytes(indata)[:room] if room > 0 else b""
            self._buffer.extend(block)
        if block and self._on_audio is not None:
            self._on_audio(block)

    def start(self, on_audio: Callable[[bytes], None] | None = None) -> None:
        """Start recording; `on_audio` (if given) gets each block as it is captured, on PortAudio's thread."""
        sd = _sounddevice()
        self._on_audio = on_audio
        with self._lock:
            self._buffer.clear()
        try:
            self._stream = sd.RawInputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="int16",
                device=self._device,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot open the microphone ({self._device or 'default'}): {exc}") from exc

    def stop(self) -> bytes:
        """Stop recording and return what was captured."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        with self._lock:
            return bytes(self._buffer)


class JitterBuffer:
    """Audio from the network, handed to the speaker at a steady pace.

    Playback starts only once `prebuffer` bytes are queued (or the reply is complete), so a late network chunk
    does not cut a word in two; after an underrun it waits for that much again instead of stuttering out every
    scrap as it arrives. Thread-safe: the network writes, PortAudio's thread reads.
    """

    def __init__(self, prebuffer: int) -> None:
        self.prebuffer = prebuffer
        self.underruns = 0
        self.played = 0
        """Bytes of real audio handed to the speaker so far (not counting silence padding)."""
        self._data = bytearray()
        self._lock = threading.Lock()
        self._waiting = True  # filling up before (re)starting
        self._complete = False

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._data.extend(pcm)

    def complete(self) -> None:
        """No more audio will come: play what is left without waiting to fill up."""
        with self._lock:
            self._complete = True

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._complete = True

    def read(self, size: int) -> tuple[bytes, bool]:
        """Up to `size` bytes to play (silence-padded), and whether everything has been played."""
        with self._lock:
            if self._waiting and (len(self._data) >= self.prebuffer or self._complete):
                self._waiting = False
            take = b""
            if not self._waiting:
                take = bytes(self._data[:size])
                del self._data[:size]
                self.played += len(take)
                if len(take) < size and not self._complete:
                    self._waiting = True  # ran dry mid-reply: fill up again before going on
                    self.underruns += 1
            finished = self._complete and not self._data
        return take + b"\x00" * (size - len(take)), finished


class Player:
    """Plays mono s16le as it is written, through a jitter buffer of `prebuffer_ms`; one instance per reply."""

    def __init__(
        self,
        sample_rate: int,
        device: str | None = None,
        prebuffer_ms: int = 80,
        on_first_audio: Callable[[], None] | None = None,
    ) -> None:
        """`on_first_audio` is called once, from PortAudio's thread, when the first real audio goes out."""
        sd = _sounddevice()
        self.sample_rate = sample_rate
        self.buffer = JitterBuffer(prebuffer=sample_rate * prebuffer_ms // 1000 * 2)
        self._on_first_audio = on_first_audio
        self._done = threading.Event()
        self._close_lock = threading.Lock()
        self._closed = False
        try:
            self._stream = sd.RawOutputStream(
                samplerate=sample_rate,
                channels=1,
                dtype="int16",
                device=_device(device),
                callback=self._callback,
                finished_callback=self._done.set,
            )
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot open the speaker ({device or 'default'}): {exc}") from exc
        self._started = False

    def _callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        audio, finished = self.buffer.read(len(outdata))
        outdata[:] = audio
        if self._on_first_audio is not None and self.buffer.played:
            report, self._on_first_audio = self._on_first_audio, None
            report()
        if finished:
            raise _sounddevice().CallbackStop

    @property
    def closed(self) -> bool:
        """Whether the output stream is closed (played out, or stopped)."""
        return self._closed

    def write(self, pcm: bytes) -> None:
        """Queue audio; the stream starts with the first write and plays once the jitter buffer is full. After
        `stop_now` (a barge-in from another thread) a late write is dropped: it never restarts the stream."""
        if len(pcm) % 2:
            raise AudioFormatError("PCM s16le must have an even number of bytes")
        self.buffer.write(pcm)
        with self._close_lock:
            if self._started or self._closed:
                return
            try:
                self._stream.start()
            except _sounddevice().PortAudioError as exc:
                raise AudioDeviceError(f"cannot start the speaker: {exc}") from exc
            self._started = True

    def finish(self, timeout_s: float | None = None) -> None:
        """Block until everything written has been played (or `stop_now` cut it short)."""
        self.buffer.complete()
        if self._started:
            self._done.wait(timeout_s)
        self._close(abort=False)

    def stop_now(self) -> None:
        """Silence at once (barge-in): drop what is buffered and abort the stream. Safe from any thread, and
        while `finish` waits in another one."""
        self.buffer.clear()
        self._close(abort=True)
        self._done.set()

    def _close(self, *, abort: bool) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if abort:
            self._stream.abort()
        self._stream.close()
