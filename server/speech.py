"""Speech out: turn a reply's pieces into audio chunks for the wire, in the rate the device asked for."""

from __future__ import annotations

import asyncio

from voice_models.audio import chunk_pcm, resample_pcm16
from voice_models.tts import Synthesizer


class SpeechOut:
    """Wraps the Piper voice: synthesis runs in a worker thread so the event loop keeps streaming."""

    def __init__(self, synthesizer: Synthesizer, chunk_ms: int) -> None:
        self.synthesizer = synthesizer
        self.chunk_ms = chunk_ms

    @property
    def native_rate(self) -> int:
        return self.synthesizer.sample_rate

    async def speak(self, text: str, sample_rate: int) -> list[bytes]:
        """Synthesize `text` and return it as ~chunk_ms pieces of s16le at `sample_rate` (0 = native)."""
        pcm = await asyncio.to_thread(self.synthesizer.synthesize, text)
        rate = sample_rate or self.native_rate
        if rate != self.native_rate:
            pcm = await asyncio.to_thread(resample_pcm16, pcm, self.native_rate, rate)
        return list(chunk_pcm(pcm, rate, self.chunk_ms))
