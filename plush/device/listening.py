"""The audio of one press of the button, passed on as it is captured: to streaming STT on the plush, or to the
server over the turn's Converse stream (opened at button down, so the server transcribes while the owner speaks).
With STT on the plush, what it has heard so far goes to the server each time it settles (`SettledUplink`), so
the server can start the brain before the button is let go.

Both are fed from PortAudio's callback thread; neither blocks it.
"""

from __future__ import annotations

import asyncio

from plush.device.client import ConverseCall, predates_settled
from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.audio import WHISPER_RATE, PcmResampleStream
from plush.voice_models.streaming_stt import StreamingStt, StreamingTranscription


class AudioUplink:
    """The turn's Converse stream while the button is held: microphone audio goes to the server as it comes."""

    def __init__(self, call: ConverseCall, sample_rate: int) -> None:
        self.call = call
        self.sample_rate = sample_rate
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write())
        self.refused = False
        """The server refused Settled itself (it predates the message), not just lost the stream."""

    def on_audio(self, pcm: bytes) -> None:
        """From PortAudio's thread: hand the block to the event loop, which sends it."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, pcm)

    async def _write(self) -> None:
        while (pcm := await self._queue.get()) is not None:
            await self.call.send_audio(pcm, self.sample_rate)

    async def finish(self) -> ConverseCall:
        """The button is up: send what is still queued, then TurnEnd; the call's events are the reply."""
        # call_soon keeps FIFO order with the callback thread's call_soon_threadsafe: no block is left behind.
        self._loop.call_soon(self._queue.put_nowait, None)
        await self._writer
        await self.call.end()
        return self.call

    async def cancel(self, reason: str) -> None:
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self.call.cancel(reason)


log = get_logger(__name__)
SETTLED_KEEPALIVE_S = 3.0
"""With nothing new to say for this long, the last Settled goes again (the server takes the same text as a no-op):
a button held in silence must not look like a stream gone quiet (`[server] idle_timeout_s`, 10 s by default)."""


class SettledUplink:
    """The turn's Converse stream while the button is held and the plush transcribes: each settled text so far
    (`Settled`, "" when the owner speaks on) goes to the server as it comes, then the final transcript and TurnEnd.
    """

    def __init__(self, call: ConverseCall) -> None:
        self.call = call
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write())

    def on_settled(self, text: str, language: str) -> None:
        """From the streaming STT's worker thread: hand the text to the event loop, which sends it."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (text, language))

    async def _write(self) -> None:
        last = ("", "")
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), SETTLED_KEEPALIVE_S)
            except TimeoutError:
                item = last
            if item is None:
                return
            await self.call.send_settled(*item)
            last = item

    async def finish(self, text: str, language: str) -> ConverseCall | None:
        """The button is up and the final text known: send it and TurnEnd. None when the stream is no longer
        usable (the server ended it while the button was held): the caller opens a fresh turn."""
        self._loop.call_soon(self._queue.put_nowait, None)
        try:
            await self._writer
            await self.call.send_transcript(text, language)
            await self.call.end()
        except PlushError as exc:
            self.refused = predates_settled(exc)
            log.info("settled_stream_lost", error=str(exc), server_predates_settled=self.refused)
            await self.call.cancel("stream lost")
            return None
        return self.call

    async def cancel(self, reason: str) -> None:
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self.call.cancel(reason)


class Listening:
    """Where the audio of one press goes while it is recorded."""

    def __init__(
        self,
        stt: StreamingStt | None,
        sample_rate: int,
        uplink: AudioUplink | None = None,
        settled: SettledUplink | None = None,
    ) -> None:
        self.transcription: StreamingTranscription | None = stt.begin() if stt else None
        self._resample = PcmResampleStream(sample_rate, WHISPER_RATE) if stt else None
        self.uplink = uplink
        self.settled = settled if self.transcription is not None else None
        if self.transcription is not None and self.settled is not None:
            self.transcription.on_settled = self.settled.on_settled

    def on_audio(self, pcm: bytes) -> None:
        if self.transcription is not None and self._resample is not None:
            self.transcription.feed(self._resample.feed(pcm))
        if self.uplink is not None:
            self.uplink.on_audio(pcm)

    def release(self) -> None:
        """The button is up: the resampler's last samples go to the transcription."""
        if self.transcription is not None and self._resample is not None:
            self.transcription.feed(self._resample.flush())

    async def cancel(self, reason: str) -> None:
        """Drop the utterance: stop its transcription and end its stream to the server."""
        if self.transcription is not None:
            self.transcription.cancel()
        if self.uplink is not None:
            await self.uplink.cancel(reason)
        if self.settled is not None:
            await self.settled.cancel(reason)
