"""What a replica shares with the others while it runs, besides budgets and logins: which plushes it serves
(dashboard/shared_presence.py) and the turns it stores (dashboard/fanout.py, so every live log wakes at once).

Started with the server when `[server] redis` is set, whether or not this replica runs a dashboard: a
replica without one still serves plushes that another replica's dashboard must show.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from plush.server.companion import Companion
from plush.server.dashboard.fanout import TurnAnnouncer
from plush.server.dashboard.presence import Presence
from plush.server.dashboard.shared_presence import PresenceExchange
from plush.server.shared_state import SharedState


@dataclass
class ReplicaSharing:
    """The presence exchange and the turn announcer of one replica."""

    presence: PresenceExchange
    announcer: TurnAnnouncer
    companion: Companion

    @classmethod
    async def start(cls, shared: SharedState, presence: Presence, companion: Companion) -> ReplicaSharing:
        exchange = PresenceExchange(presence, shared)
        await exchange.start()
        announcer = TurnAnnouncer(shared)
        companion.listeners.append(announcer.on_turn)
        return cls(exchange, announcer, companion)

    async def stop(self) -> None:
        """Announce what is left, take this replica's presence out (call it once every turn is stored)."""
        if self.announcer.on_turn in self.companion.listeners:
            self.companion.listeners.remove(self.announcer.on_turn)
        await self.announcer.flush()
        await self.presence.stop()


async def presence_and_sharing(
    shared: SharedState | None, companion: Companion, cleanup: AsyncExitStack
) -> tuple[Presence, ReplicaSharing | None]:
    """The server's presence (the plushes' calls) and, with the replicas' Redis, what it shares of it and of its
    turns, stopped by `cleanup` if the start fails later."""
    presence = Presence()
    if shared is None:
        return presence, None
    sharing = await ReplicaSharing.start(shared, presence, companion)
    cleanup.push_async_callback(sharing.stop)
    return presence, sharing
