"""The dashboard's side of each stored turn: wake the live logs, count it in the metrics, keep what the turn log
does not (the prompt it was answered from, its stage start times) and, when the owner chose to, its audio.

The companion calls `on_turn` right after the turn is in the database; it only records and schedules, so the
reply is never held up. Prompts and start times are kept in memory for the last `KEPT_TRACES` turns (they hold
what the owner said and what memory added, so they are not written anywhere new); audio goes to WAV files
in the server's data folder, one per turn, and is deleted with its turn (plush/server/retention.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

from plush.logs import get_logger
from plush.server.companion import TurnTrace
from plush.server.dashboard.metrics import Metrics
from plush.server.store import TurnRecord
from plush.voice_models.audio import write_wav
from plush.voice_models.opus import OpusDecoder

log = get_logger(__name__)
KEPT_TRACES = 1000


class TurnFeed:
    """Fed by the companion; read by the live log, the turn detail and the metrics."""

    def __init__(self, metrics: Metrics, audio_dir: Path | None) -> None:
        self.metrics = metrics
        self.audio_dir = audio_dir
        self._traces: OrderedDict[str, TurnTrace] = OrderedDict()
        self._waiters: set[asyncio.Event] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    def on_turn(self, record: TurnRecord, trace: TurnTrace) -> None:
        """A turn was stored (a Companion listener)."""
        audio, trace.audio = trace.audio, []
        self._traces[record.id] = trace
        while len(self._traces) > KEPT_TRACES:
            self._traces.popitem(last=False)
        self.metrics.observe(record)
        if self.audio_dir is not None and audio:
            write = asyncio.create_task(asyncio.to_thread(self._save_audio, record.id, audio, trace))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
        self.notify()

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def wait(self, timeout_s: float) -> None:
        """Until a turn is stored, the feed closes or `timeout_s` passes (turns stored by another process show
        up at the next poll)."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        waits = [asyncio.ensure_future(waiter.wait()), asyncio.ensure_future(self.closed.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waits:
                pending.cancel()
            self._waiters.discard(waiter)

    def trace(self, turn_id: str) -> TurnTrace | None:
        return self._traces.get(turn_id)

    def audio_path(self, turn_id: str) -> Path | None:
        if self.audio_dir is None or not turn_id.isalnum():
            return None
        path = self.audio_dir / f"{turn_id}.wav"
        return path if path.is_file() else None

    async def flush(self) -> None:
        """Wait until the audio of every turn stored so far is written."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        self.closed.set()
        self.notify()
        await self.flush()

    def _save_audio(self, turn_id: str, chunks: list[bytes], trace: TurnTrace) -> None:
        assert self.audio_dir is not None
        try:
            if trace.audio_opus:
                decoder = OpusDecoder(trace.audio_rate)
                pcm = b"".join(decoder.decode(chunk) for chunk in chunks) + decoder.flush()
            else:
                pcm = b"".join(chunks)
            write_wav(self.audio_dir / f"{turn_id}.wav", pcm, trace.audio_rate)
        except Exception:  # a full disk or a bad packet loses the recording, never the turn
            log.exception("turn_audio_not_kept", turn_id=turn_id)
