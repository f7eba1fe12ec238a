"""Presence across replicas: each replica's sightings in Redis, so every dashboard (and the bot's /status) shows
a plush online whichever replica it talks to.

Each replica writes what it saw (presence.Sighting per device) to a hash of its own every `EVERY_S`, set to
expire after `TTL_S`, and reads every other replica's back into `Presence.elsewhere`. One writer per key means
no two replicas ever race on a counter, and the gRPC calls themselves never wait on Redis (they are counted in
memory, as with one server). A replica that dies stops writing: its hash expires, and the plushes it served stop
showing online elsewhere within `TTL_S` and one read (`OFFLINE_WITHIN_S`), whatever `online_window_s` says. A
replica that stops cleanly deletes its hash at once.

An index of the replicas that wrote lately (a sorted set scored by when each one's hash expires) lets a reader
find the others without scanning Redis's keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from plush.logs import get_logger
from plush.server.dashboard.presence import Presence, Sighting

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)
EVERY_S = 1.0
"""How often a replica writes its sightings and reads the others'."""
TTL_S = 5.0
"""How long a replica's sightings outlive its last write (it died, or Redis did not answer it)."""
OFFLINE_WITHIN_S = TTL_S + EVERY_S
"""The longest a dead replica's plushes keep showing online on another replica."""


class PresenceExchange:
    """Shares `presence` (this replica's calls) with the other replicas on `shared`, and theirs with it."""

    def __init__(self, presence: Presence, shared: SharedState) -> None:
        self.presence = presence
        self.shared = shared
        self._index = shared.key("presence", "replicas")
        self._task: asyncio.Task[None] | None = None
        self._said_unreachable = False

    def key_of(self, replica: str) -> str:
        return self.shared.key("presence", "replica", replica)

    async def start(self) -> None:
        """Exchange once (so the dashboard starts with the others' plushes), then every `EVERY_S`."""
        await self.exchange()
        self._task = asyncio.create_task(self._run(), name="plush-presence-exchange")

    async def stop(self) -> None:
        """Stop exchanging and take this replica's sightings out at once (they would expire anyway)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with self.shared.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key_of(self.shared.replica))
                pipe.zrem(self._index, self.shared.replica)
                await pipe.execute()
        except Exception as exc:  # Redis away: the hash expires on its own
            log.warning("presence_not_withdrawn", error=str(exc) or type(exc).__name__)

    async def exchange(self) -> None:
        """Write this replica's sightings, then read the others' into `presence.elsewhere`."""
        try:
            async with asyncio.timeout(TTL_S):  # a Redis that hangs must not keep stale sightings on show
                await self._write()
                self.presence.elsewhere = await self._read()
        except Exception as exc:  # Redis away: each replica shows its own plushes meanwhile
            self.presence.elsewhere = {}
            if not self._said_unreachable:
                self._said_unreachable = True
                log.warning("presence_unshared", error=str(exc) or type(exc).__name__, hint="retrying")
            return
        if self._said_unreachable:
            self._said_unreachable = False
            log.info("presence_shared_again")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            await self.exchange()

    async def _write(self) -> None:
        mine = {s.device_id: json.dumps(asdict(s)) for s in self.presence.own_sightings()}
        key, now = self.key_of(self.shared.replica), time.time()
        async with self.shared.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if mine:
                pipe.hset(key, mapping=mine)
                pipe.pexpire(key, int(TTL_S * 1000))
                pipe.zadd(self._index, {self.shared.replica: now + TTL_S})
            else:
                pipe.zrem(self._index, self.shared.replica)
            pipe.zremrangebyscore(self._index, "-inf", now)  # replicas whose hashes have expired
            await pipe.execute()

    async def _read(self) -> dict[str, Sighting]:
        """Every other replica's sightings, combined per device."""
        others = [
            name.decode() if isinstance(name, bytes) else str(name)
            for name in await self.shared.client.zrangebyscore(self._index, time.time(), "+inf")
        ]
        others = [name for name in others if name != self.shared.replica]
        if not others:
            return {}
        async with self.shared.client.pipeline(transaction=False) as pipe:
            for name in others:
                pipe.hgetall(self.key_of(name))
            hashes: list[dict[Any, Any]] = await pipe.execute()
        combined: dict[str, Sighting] = {}
        for fields in hashes:
            for value in fields.values():
                seen = _sighting(value)
                if seen is not None:
                    known = combined.get(seen.device_id)
                    combined[seen.device_id] = seen if known is None else known.combined(seen)
        return combined


def _sighting(value: Any) -> Sighting | None:
    try:
        fields = json.loads(value)
        return Sighting(**fields)
    except (ValueError, TypeError):  # another version's entry: skipped, never a failed page
        return None
