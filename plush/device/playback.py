"""The reply's audio on its way out: decoded (Opus), set to the plush's volume, played or written to a file.

Every step blocks (the codec, the resamplers, PortAudio opening and closing a stream, a file write), so the turn
loop runs them in a worker thread, one hop per chunk received from the server: a 100 ms chunk holds five 20 ms
Opus packets, and a hop per packet would cost more than the work. A barge-in stops a sink from another thread,
possibly while a chunk is still being written: a late write never reopens the speaker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from plush.device.audio_io import Player
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.voice_models.audio import resample_pcm16, scale_pcm16, write_wav
from plush.voice_models.opus import OpusDecoder


class AudioSink(Protocol):
    """Where the reply's audio goes: the speaker, or a file.

    Blocking; called from worker threads, one call at a time, except `stop_now`, which may come at any moment.
    After `finish` a sink may take more audio (the offline phrase after a broken reply) and be finished again.
    """

    def write(self, pcm: bytes, sample_rate: int) -> None: ...
    def finish(self) -> None: ...
    def stop_now(self) -> None: ...
    def when_first_played(self, callback: Callable[[], None]) -> None:
        """Call `callback` once (from any thread) when the next audio written is first heard."""


class WavSink:
    """Collects the reply and writes it as a WAV file when the turn ends (also when it fails half way)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pcm = bytearray()
        self._rate = 0
        self._lock = threading.Lock()
        self._on_first: Callable[[], None] | None = None

    def when_first_played(self, callback: Callable[[], None]) -> None:
        """A file is "heard" when the audio is written to it."""
        self._on_first = callback

    def write(self, pcm: bytes, sample_rate: int) -> None:
        with self._lock:
            self._rate = self._rate or sample_rate  # one file, one rate: later audio is resampled to the first's
            self._pcm.extend(resample_pcm16(pcm, sample_rate, self._rate))
            report, self._on_first = self._on_first, None
        if report is not None:
            report()

    def finish(self) -> None:
        with self._lock:
            pcm, rate = bytes(self._pcm), self._rate or 16000
        write_wav(self.path, pcm, rate)

    def stop_now(self) -> None:
        self.finish()


class SpeakerSink:
    """Plays the reply as it arrives; the stream opens at the rate of the first chunk and closes on `finish`."""

    def __init__(self, device: str | None = None, prebuffer_ms: int = 80) -> None:
        self._device = device
        self._prebuffer_ms = prebuffer_ms
        self._player: Player | None = None
        self._stopped = False
        self._lock = threading.Lock()
        """Held while the stream opens, so a `stop_now` meanwhile waits for it and then closes it."""
        self._on_first: Callable[[], None] | None = None

    def when_first_played(self, callback: Callable[[], None]) -> None:
        """Reported by the speaker's stream when the jitter buffer first hands it real audio."""
        with self._lock:
            self._on_first = callback

    @property
    def open(self) -> bool:
        """Whether an output stream is open (playing, or waiting for more audio)."""
        with self._lock:
            return self._player is not None and not self._player.closed

    def write(self, pcm: bytes, sample_rate: int) -> None:
        with self._lock:
            if self._stopped:
                return  # a chunk that was on its way when the owner pressed the button
            if self._player is None or self._player.closed:
                self._player = Player(sample_rate, self._device, self._prebuffer_ms, self._on_first)
                self._on_first = None
            player = self._player
        # The stream's rate is the first audio's; anything later at another rate is resampled rather than
        # played at the wrong speed.
        player.write(resample_pcm16(pcm, sample_rate, player.sample_rate))

    def finish(self) -> None:
        with self._lock:
            player = self._player
        if player is not None:
            player.finish(timeout_s=120)

    def stop_now(self) -> None:
        with self._lock:
            self._stopped = True
            player = self._player
        if player is not None:
            player.stop_now()


class ReplyAudio:
    """The reply's chunks into a sink at the plush's volume: PCM as is, Opus through one decoder for the whole
    reply (its state flows across chunks). Blocking: run each call in a worker thread, one after another."""

    def __init__(self, sink: AudioSink, volume: float) -> None:
        self.sink = sink
        self.volume = volume
        self._opus: OpusDecoder | None = None

    def play(self, chunk: pb.AudioChunk) -> None:
        if chunk.encoding != pb.AUDIO_ENCODING_OPUS:
            pcm = bytes(chunk.data)
        else:
            if self._opus is None:
                self._opus = OpusDecoder(chunk.sample_rate)
            pcm = self._opus.decode(chunk.data)
        self.sink.write(scale_pcm16(pcm, self.volume), chunk.sample_rate)

    def flush(self, sample_rate: int) -> None:
        """The end of the reply: what the decoder still holds."""
        if self._opus is not None and (tail := self._opus.flush()):
            self.sink.write(scale_pcm16(tail, self.volume), sample_rate)
