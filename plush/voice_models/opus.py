"""Opus for the reply audio (PyAV's libopus): about a tenth of the bytes of PCM, for a plush on weak Wi-Fi.

An `AudioChunk` with encoding OPUS carries whole Opus packets (20 ms each), each preceded by its length as a
16-bit big-endian integer, so packets never straddle chunks and a chunk decodes on its own. One encoder and one
decoder live for a whole reply, so the codec's state flows across sentence boundaries without clicks.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Any

import numpy as np

from plush.errors import AudioFormatError

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
BITRATE = 32_000
"""Bits per second: clear speech for a toy's speaker, ~4 KB a second instead of ~44 KB of 22 kHz PCM."""


def opus_rate(wanted: int) -> int:
    """The Opus rate to encode at for audio at `wanted` Hz: the smallest that is not lower, else 48 kHz."""
    return next((rate for rate in OPUS_RATES if rate >= wanted), OPUS_RATES[-1])


def pack_packets(packets: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in packets)


def unpack_packets(data: bytes) -> list[bytes]:
    """Split an OPUS chunk into its packets; a malformed chunk is an AudioFormatError."""
    packets, offset = [], 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise AudioFormatError("malformed Opus chunk: a packet length is cut off")
        (size,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if size == 0 or offset + size > len(data):
            raise AudioFormatError("malformed Opus chunk: a packet runs past the chunk's end")
        packets.append(data[offset : offset + size])
        offset += size
    return packets


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise AudioFormatError("Opus needs PyAV: pip install 'plush[device]' (it comes with faster-whisper)") from exc
    return av


class OpusEncoder:
    """Mono s16le at `sample_rate` (an Opus rate) -> Opus packets, 20 ms each."""

    def __init__(self, sample_rate: int, bitrate: int = BITRATE) -> None:
        if sample_rate not in OPUS_RATES:
            raise AudioFormatError(f"Opus encodes at {', '.join(map(str, OPUS_RATES))} Hz, not {sample_rate}")
        av = self._av = _av()
        self.sample_rate = sample_rate
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.sample_rate = sample_rate
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.bit_rate = bitrate
        self._codec.time_base = Fraction(1, sample_rate)
        self._codec.open()
        self._frame_size: int = self._codec.frame_size
        self._fifo = av.AudioFifo()
        self._pts = 0

    def encode(self, pcm: bytes) -> list[bytes]:
        """Packets for the whole 20 ms frames now available; the remainder waits for more audio or `flush`."""
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2")[None, :]
            frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.time_base = Fraction(1, self.sample_rate)
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._fifo.write(frame)
        packets: list[bytes] = []
        while (frame := self._fifo.read(self._frame_size)) is not None:
            packets.extend(bytes(p) for p in self._codec.encode(frame))
        return packets

    def flush(self) -> list[bytes]:
        """The last packets: the remainder padded with silence to a whole frame, then the codec's tail."""
        left = self._fifo.samples
        packets = self.encode(b"\x00\x00" * (self._frame_size - left)) if left else []
        packets.extend(bytes(p) for p in self._codec.encode(None))
        return packets


class OpusDecoder:
    """Opus packets -> mono s16le at `sample_rate`."""

    def __init__(self, sample_rate: int) -> None:
        av = self._av = _av()
        self.sample_rate = sample_rate
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = 48000
        self._codec.layout = "mono"
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)

    def decode(self, data: bytes) -> bytes:
        """PCM for one OPUS chunk (see the module docstring for its framing)."""
        out = bytearray()
        for packet in unpack_packets(data):
            try:
                frames = self._codec.decode(self._av.Packet(packet))
            except self._av.FFmpegError as exc:
                raise AudioFormatError(f"undecodable Opus packet: {exc}") from exc
            for frame in frames:
                out.extend(self._pcm(self._resampler.resample(frame)))
        return bytes(out)

    def flush(self) -> bytes:
        """What the resampler still holds at the end of the reply."""
        return self._pcm(self._resampler.resample(None))

    @staticmethod
    def _pcm(frames: list[Any]) -> bytes:
        return b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)
