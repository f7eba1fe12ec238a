"""The bot on several replicas that share a Redis (`[server] redis`): one poller at a time, each pushed update
handled once, and one webhook secret for all.

- **Long polling.** Telegram allows one `getUpdates` per bot at a time, so only the holder of the poller's lease
  (plush/server/lease.py) polls. The others run the bot too, with nothing to do until the lease comes to them:
  when the holder stops (its lease is let go of) or dies (its lease expires, within `POLLER_LEASE_S` and a
  quarter). The new holder first handles what the inbox folder holds (replicas on one machine share it, so the
  updates a killed holder had taken and not answered are answered now), then polls from Telegram's oldest
  unconfirmed update.
- **A webhook.** Telegram pushes each update to the one URL, which a balancer may hand to any replica, and pushes
  it again when no 200 came back in time. The first replica to claim an update id (`SET NX EX`, kept as long as
  Telegram keeps updates) handles it; another that receives it again answers 200 and drops it. The claimant keeps
  the update in its inbox before it answers 200, so one killed mid-reply answers it when it starts again. Each
  replica listens on a `webhook_port` of its own, behind the proxy Telegram pushes to, and keeps its inbox in a
  folder named by that port: a replica that starts does not answer what another one on the machine is answering.
- **The webhook's secret.** Telegram echoes one secret on every push, the last one set: so every replica uses the
  one the first replica stored, or each replica's `setWebhook` would make the others refuse Telegram's pushes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from plush.logs import get_logger
from plush.server.lease import Lease

if TYPE_CHECKING:
    from telegram.ext import Application

    from plush.server.shared_state import SharedState

log = get_logger(__name__)
POLLER_LEASE_S = 10.0
"""How long the poller's lease lasts unrenewed: the longest Telegram goes unpolled after its poller is killed."""
UPDATE_MEMORY_S = 24 * 3600
CLAIM_WAIT_S = 2.0
"""How long a pushed update waits on Redis for its claim before it is handled anyway (Telegram waits for the 200)."""
"""How long a claimed update id is remembered: Telegram keeps an undelivered update for 24 hours."""


class TelegramReplicas:
    """The shared side of one bot (`bot_id`, the number its token starts with) on the replicas' Redis."""

    def __init__(self, shared: SharedState, bot_id: str, lease_s: float = POLLER_LEASE_S) -> None:
        from redis.exceptions import RedisError

        self.shared = shared
        self.bot_id = bot_id
        self.lease = Lease(shared, f"telegram-poller:{bot_id}", lease_s)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)

    async def poll_while_held(
        self,
        app: Application[Any, Any, Any, Any, Any, Any],
        stop: asyncio.Event,
        start: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Until `stop` is set: wait for the lease, then `start` (replay the inbox, start polling) and poll while it
        is held. Polling stops before the lease is let go of, or before another replica could have taken it."""
        assert app.updater is not None
        try:
            while await self.lease.take(stop):
                log.info("telegram_poller_holding", replica=self.shared.replica)
                lost = await self._poll(app, stop, start)
                if not lost:
                    return
                log.warning("telegram_poller_lease_lost", replica=self.shared.replica, hint="another replica polls")
        finally:
            if app.updater.running:
                await app.updater.stop()  # confirms what was taken, before another replica may poll
            await self.lease.release()

    async def _poll(
        self,
        app: Application[Any, Any, Any, Any, Any, Any],
        stop: asyncio.Event,
        start: Callable[[], Coroutine[Any, Any, None]],
    ) -> bool:
        """Poll while the lease is renewed; True when it was lost, False when `stop` was set. The lease is renewed
        from the start, even while `start` waits on an unreachable Telegram."""
        assert app.updater is not None
        keeping = asyncio.create_task(self.lease.keep(stop), name="telegram-lease")
        starting = asyncio.create_task(start(), name="telegram-poll-start")
        try:
            await asyncio.wait({keeping, starting}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done() and (error := starting.exception()) is not None:
                raise error
            return await keeping
        finally:
            for task in (keeping, starting):
                task.cancel()
            await asyncio.gather(keeping, starting, return_exceptions=True)
            if app.updater.running:
                await app.updater.stop()

    async def claim(self, update_id: int) -> bool:
        """Whether this replica is the first to take pushed update `update_id` (so it handles it). When Redis does
        not answer, it is handled here: twice is better than never."""
        key = self.shared.key("telegram", self.bot_id, "update", str(update_id))
        try:
            async with asyncio.timeout(CLAIM_WAIT_S):
                return bool(await self.shared.client.set(key, self.shared.replica, nx=True, ex=UPDATE_MEMORY_S))
        except self._errors as exc:  # a timeout is an OSError too
            log.warning("telegram_claim_unreachable", update_id=update_id, error=str(exc) or type(exc).__name__)
            return True

    async def webhook_secret(self, proposed: str) -> str:
        """The secret every replica gives Telegram: the first one stored (`proposed`, if none is yet)."""
        key = self.shared.key("telegram", self.bot_id, "webhook-secret")
        await self.shared.client.set(key, proposed, nx=True)
        stored = await self.shared.client.get(key)
        return stored.decode() if isinstance(stored, bytes) else str(stored or proposed)


def bot_id(token: str) -> str:
    """The bot's id: the number a Bot API token starts with (`123456:ABC...` -> `123456`)."""
    return token.split(":", 1)[0]
