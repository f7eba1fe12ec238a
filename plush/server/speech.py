"""Speech out: turn a reply's pieces into audio chunks for the wire, in the rate the device asked for."""

from __future__ import annotations

import asyncio

from plush.voice_models.audio import chunk_pcm, resample_pcm16
from plush.voice_models.opus import OpusEncoder, opus_rate, pack_packets
from plush.voice_models.tts import Synthesizer


class SpeechOut:
    """Wraps the Piper voice: synthesis runs in a worker thread so the event loop keeps streaming."""

    def __init__(self, synthesizer: Synthesizer, chunk_ms: int) -> None:
        self.synthesizer = synthesizer
        self.chunk_ms = chunk_ms

    @property
    def native_rate(self) -> int:
        return self.synthesizer.sample_rate

    def output_rate(self, wanted: int, opus: bool) -> int:
        """The rate a reply is sent at: what the device asked for (0: the voice's own), an Opus rate for Opus."""
        rate = wanted or self.native_rate
        return opus_rate(rate) if opus else rate

    async def speak(self, text: str, sample_rate: int, encoder: OpusEncoder | None = None) -> list[bytes]:
        """Synthesize `text` as ~chunk_ms pieces at `sample_rate`: s16le, or Opus packets when given an encoder.

        Synthesis, resampling and encoding all run in a worker thread, off the event loop.
        """
        return await asyncio.to_thread(self._speak, text, sample_rate, encoder)

    def _speak(self, text: str, rate: int, encoder: OpusEncoder | None) -> list[bytes]:
        pcm = resample_pcm16(self.synthesizer.synthesize(text), self.native_rate, rate)
        chunks = list(chunk_pcm(pcm, rate, self.chunk_ms))
        if encoder is None:
            return chunks
        return [pack_packets(packets) for chunk in chunks if (packets := encoder.encode(chunk))]

    async def finish(self, encoder: OpusEncoder | None) -> list[bytes]:
        """The encoder's last packets at the end of a reply (nothing for PCM)."""
        if encoder is None:
            return []
        packets = await asyncio.to_thread(encoder.flush)
        return [pack_packets(packets)] if packets else []
