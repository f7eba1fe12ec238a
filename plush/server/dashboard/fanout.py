"""Every replica's live log shows every replica's turns as they are stored: a message on Redis pub/sub per turn.

The live log reads turns from the shared database by row (api.stream), so a turn is shown once whichever replica
stored it; what another replica's turn lacked was the wake-up: a live log waited for its next poll (2 s). Each
replica publishes the id of every turn it stores on `plush:turns` (`TurnAnnouncer`, on every replica, with or
without a dashboard), and each dashboard (`TurnWakeups`) wakes its open live logs when another replica's turn
is announced; its own turns already woke them. Pub/sub delivers to whoever listens now and keeps nothing, which
is all a wake-up needs: a live log that missed one still finds the turn at its next poll.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from plush.logs import get_logger

if TYPE_CHECKING:
    from plush.server.companion import TurnTrace
    from plush.server.dashboard.live import TurnFeed
    from plush.server.shared_state import SharedState
    from plush.server.store import TurnRecord

log = get_logger(__name__)
CHANNEL = ("turns",)
RETRY_S = 1.0
POLL_BOUND_S = 2.0
"""How long an announcement may wait on Redis: past the live logs' poll, it is of no use."""
"""How soon a dashboard listens again after Redis went away."""


def channel(shared: SharedState) -> str:
    return shared.key(*CHANNEL)


class TurnAnnouncer:
    """A Companion listener that announces each turn stored here to the other replicas (in the background, so
    the reply never waits on Redis; an announcement Redis did not take is logged and left to the polls)."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self._sends: set[asyncio.Task[None]] = set()

    def on_turn(self, record: TurnRecord, trace: TurnTrace) -> None:
        send = asyncio.create_task(self._announce(record.id))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def _announce(self, turn_id: str) -> None:
        message = json.dumps({"replica": self.shared.replica, "turn": turn_id})
        try:
            async with asyncio.timeout(POLL_BOUND_S):
                await self.shared.client.publish(channel(self.shared), message)
        except Exception as exc:  # Redis away: the other dashboards see the turn at their next poll
            log.warning("turn_not_announced", turn_id=turn_id, error=str(exc) or type(exc).__name__)

    async def flush(self) -> None:
        """Wait until every announcement so far was sent (or failed)."""
        await asyncio.gather(*self._sends, return_exceptions=True)


class TurnWakeups:
    """Listens on the turns channel for one dashboard and wakes its live logs at another replica's turn."""

    def __init__(self, feed: TurnFeed, shared: SharedState) -> None:
        self.feed = feed
        self.shared = shared
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (waiting until Redis confirmed it, so no turn stored from now on goes unannounced here)."""
        self._task = asyncio.create_task(self._listen(), name="plush-turn-wakeups")
        waiting = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({self._task, waiting}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self) -> None:
        said = False
        while True:
            try:
                async with self.shared.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel(self.shared))
                    self._subscribed.set()
                    if said:
                        log.info("turn_wakeups_listening_again")
                        said = False
                    async for message in pubsub.listen():
                        self._heard(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the live logs poll meanwhile
                if not said:
                    log.warning("turn_wakeups_lost", error=str(exc) or type(exc).__name__, hint="retrying")
                    said = True
            await asyncio.sleep(RETRY_S)

    def _heard(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        with suppress(ValueError, TypeError, AttributeError):
            if json.loads(message["data"]).get("replica") == self.shared.replica:
                return  # this replica's own turn: its live logs were woken when it was stored
        self.feed.notify()
