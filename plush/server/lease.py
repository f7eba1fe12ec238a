"""One holder at a time among the replicas: a lease in Redis that its holder renews and lets go of when it stops.

What it is for: Telegram allows one `getUpdates` long poll per bot at a time (a second one gets 409 Conflict), so
of N replicas only the lease's holder polls. The lease is a key set with `SET NX PX` to this replica's name; the
holder renews it every quarter of its time and, on a clean stop, deletes it, so another replica takes over at its
next try. A holder that is killed (SIGKILL, a lost machine) renews nothing: its key expires and another replica
holds it within `ttl_s` and a quarter.

The holder counts its lease from the moment it *sent* each renewal, so the time it believes it holds the lease
always ends before Redis lets the key expire; and it gives the lease up (`keep` returns) a quarter of `ttl_s`
before that, which leaves the old holder time to stop polling before a new one can begin; a Redis that does not
answer (a network cut) is waited for only until then. Renewal and release are compare-and-set scripts: a replica
never renews or deletes a lease that another one holds now.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from plush.logs import get_logger

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)

RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """The lease called `name` among the replicas on `shared`, held for `ttl_s` at a time by this replica."""

    def __init__(
        self, shared: SharedState, name: str, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from redis.exceptions import RedisError

        self.shared = shared
        self.name = name
        self.key = shared.key("lease", name)
        self.ttl_s = ttl_s
        self._clock = clock
        self._valid_until = 0.0
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._said_unreachable = False

    @property
    def every_s(self) -> float:
        """How often the holder renews, and a waiting replica tries to take the lease."""
        return self.ttl_s / 4

    def held(self) -> bool:
        """Whether this replica may act as the holder now (a quarter of the lease is kept back as a margin)."""
        return self._valid_until - self._clock() > self.every_s

    async def holder(self) -> str | None:
        """The replica that holds the lease now, or None."""
        value = await self.shared.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def try_take(self) -> bool:
        """Take the lease if nobody holds it (or renew it if this replica already does)."""
        sent = self._clock()
        try:
            async with asyncio.timeout(self.every_s):
                taken = await self.shared.client.set(self.key, self.shared.replica, nx=True, px=self._ttl_ms())
                if not taken:
                    return await self._renew(sent)
        except self._errors as exc:  # TimeoutError is an OSError
            self._unreachable(exc)
            return False
        self._valid_until = sent + self.ttl_s
        self._reachable()
        return True

    async def take(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            if await self.try_take():
                return True
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        return False

    async def keep(self, stop: asyncio.Event) -> bool:
        """Renew the lease until `stop` is set (False) or it is lost (True): another replica holds it, or Redis did
        not answer for so long that another one may soon."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._next_renewal_in())
            if stop.is_set():
                return False
            sent = self._clock()
            try:  # a Redis that hangs (a network cut) must not hold the holder past its lease
                async with asyncio.timeout(max(0.05, self._valid_until - sent - self.every_s)):
                    mine = await self._renew(sent)
            except self._errors as exc:  # TimeoutError is an OSError
                self._unreachable(exc)
                mine = True  # perhaps still ours: `held` says for how long it safely is
            else:
                self._reachable()
            if not mine:
                self._valid_until = 0.0
            if not self.held():
                return True

    async def release(self) -> None:
        """Let go of the lease (only if this replica holds it), so another replica takes it at its next try."""
        self._valid_until = 0.0
        try:
            async with asyncio.timeout(self.every_s):
                await self.shared.client.eval(RELEASE, 1, self.key, self.shared.replica)  # type: ignore[misc]
        except self._errors as exc:  # it expires on its own (a timeout is an OSError too)
            log.warning("lease_not_released", lease=self.name, error=str(exc) or type(exc).__name__)

    async def _renew(self, sent: float) -> bool:
        renewed = await self.shared.client.eval(  # type: ignore[misc]  # redis-py types sync and async alike
            RENEW, 1, self.key, self.shared.replica, str(self._ttl_ms())
        )
        if renewed:
            self._valid_until = sent + self.ttl_s
        return bool(renewed)

    def _next_renewal_in(self) -> float:
        """A quarter of the lease after the last renewal, sooner when that one failed and time runs short."""
        left = self._valid_until - self._clock()
        return max(0.05, min(self.every_s, left - self.every_s))

    def _ttl_ms(self) -> int:
        return max(1, math.ceil(self.ttl_s * 1000))

    def _unreachable(self, exc: BaseException) -> None:
        if not self._said_unreachable:
            self._said_unreachable = True
            log.warning("lease_unreachable", lease=self.name, error=str(exc) or type(exc).__name__)

    def _reachable(self) -> None:
        if self._said_unreachable:
            self._said_unreachable = False
            log.info("lease_reachable_again", lease=self.name)
