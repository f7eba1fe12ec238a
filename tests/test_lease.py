"""The replicas' lease (plush/server/lease.py) on a real Redis: one holder at a time, taken over once let go of,
and given up by a holder cut off from Redis before another replica could take it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis_server import RedisServer

from plush.server.lease import Lease
from plush.server.shared_state import SharedState

TTL_S = 2.0


@asynccontextmanager
async def replicas(url: str) -> AsyncIterator[tuple[SharedState, SharedState]]:
    a, b = await SharedState.connect(url), await SharedState.connect(url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_one_replica_holds_the_lease_and_another_takes_it_once_it_is_let_go(redis_url: str) -> None:
    async with replicas(redis_url) as (a, b):
        on_a, on_b = Lease(a, "poller", TTL_S), Lease(b, "poller", TTL_S)
        assert await on_a.try_take()
        assert not await on_b.try_take(), "held by A"
        assert await on_a.try_take(), "A renews its own lease"
        assert await on_a.holder() == a.replica
        await on_b.release()  # B cannot let go of A's lease
        assert await on_b.holder() == a.replica
        await on_a.release()
        assert await on_b.try_take()
        assert await on_a.holder() == b.replica and not on_a.held()


async def test_a_holder_cut_off_from_redis_gives_the_lease_up_before_another_can_take_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    assert server.process is not None
    try:
        async with replicas(server.url) as (a, b):
            on_a, on_b = Lease(a, "poller", TTL_S), Lease(b, "poller", TTL_S)
            assert await on_a.try_take()
            taken_at = time.monotonic()
            os.kill(server.process.pid, signal.SIGSTOP)  # Redis hangs: a network cut, not a refusal
            try:
                lost = await asyncio.wait_for(on_a.keep(asyncio.Event()), TTL_S * 2)
                gave_up_at = time.monotonic()
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            assert lost and not on_a.held()
            assert gave_up_at - taken_at < TTL_S, "A stopped acting as the holder before its lease could expire"
            assert await asyncio.wait_for(on_b.take(asyncio.Event()), TTL_S * 3)
            assert time.monotonic() - taken_at >= TTL_S * 0.99, "B took it only once A's lease had expired"
            assert await on_b.holder() == b.replica
    finally:
        server.stop()
