"""A turn's row in the store while the turn is under way, so a replica that dies mid-turn still leaves it logged.

A turn used to reach the store only when it ended: a replica killed with SIGKILL (the kernel's OOM killer, a power
cut) in the middle of a reply took its turn with it. Now the turn is written as it starts, already as the store
would hold it if its replica never came back: `interrupted`, ending `replica_lost` (`Store.begin_turn`); what the
reply has said follows it, piece by piece (`Store.note_reply`); the turn's end replaces it (`Store.add_turn`).
Nothing has to notice that a replica died, and nothing needs a heartbeat: its turns are already stored as what they
became. Window and recall leave such rows out (see `records.REPLICA_LOST`).

The writes run in the background, one at a time and in order, so the reply never waits on the disk; a newer text
replaces an older one not yet written. The turn's end waits for them (`settled`), so it is always the last word. A
write that fails is logged and dropped: the turn's end is still stored as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from plush.logs import get_logger
from plush.server.store import Store, TurnRecord

log = get_logger(__name__)


class TurnJournal:
    """The store's copy of one turn under way; made when the turn starts (which writes its row)."""

    def __init__(self, store: Store, record: TurnRecord) -> None:
        self._store = store
        self._turn_id = record.id
        self._said = ""
        self._noting = False
        self._last: asyncio.Task[None] | None = None
        started = replace(record, timings=dict(record.timings))  # as it is now: the turn goes on changing it
        self._then(lambda: store.begin_turn(started), "begin")

    def said(self, reply_text: str) -> None:
        """The reply so far (all of it, not the new piece); written after what is being written now."""
        self._said = reply_text
        if not self._noting:
            self._noting = True
            self._then(self._note, "note")

    async def settled(self) -> None:
        """Wait until every write asked for so far is done (before the turn's end is stored)."""
        if self._last is not None:
            await asyncio.wait([self._last])

    async def _note(self) -> None:
        self._noting = False  # a piece said from now on needs a write of its own
        await self._store.note_reply(self._turn_id, self._said)

    def _then(self, write: Callable[[], Awaitable[object]], what: str) -> None:
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await write()
            except Exception as exc:  # the turn goes on; its end is stored all the same
                log.warning("turn_journal_failed", turn_id=self._turn_id, write=what, error=str(exc))

        self._last = asyncio.create_task(run(), name=f"plush-journal-{self._turn_id}")
