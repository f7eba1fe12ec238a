"""Replicas on one Redis spend one Gemini budget between them: never more than the minute allows, together.

Real Redis (tests/redis_server.py), real servers with the real google-genai client, the fake Gemini counting
what reached it. Without `[server] redis` each server keeps its own budget, as one home server always has.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import StartServer
from fakes.gemini import FakeGemini
from redis_server import RedisServer

from plush.config import GeminiConfig
from plush.device.client import CompanionClient
from plush.errors import PlushError
from plush.server.app import RunningServer
from plush.server.llm.base import Prompt
from plush.server.llm.gemini_budget import GeminiBudget
from plush.server.shared_state import SharedState
from plush.server.store import Store


async def ask(server: RunningServer, client: str) -> str:
    """One chat turn; the brain that answered it."""
    async with CompanionClient(f"127.0.0.1:{server.port}", client) as c:
        events = [e async for e in c.chat("Hello!")]
    return events[-1].done.backend  # type: ignore[no-any-return]


def replica(name: str, tmp_path: Path, redis_url: str | None) -> dict[str, Any]:
    """The `[server]` section of one replica (its own SQLite file: only Redis is shared here)."""
    return {"port": 0, "database": str(tmp_path / f"{name}.db"), "redis": redis_url}


async def test_two_replicas_together_stay_within_the_minute_budget(
    start_gemini_server: StartServer, fake_gemini: FakeGemini, redis_url: str, tmp_path: Path
) -> None:
    a, b = [
        await start_gemini_server(gemini={"requests_per_minute": 3}, server=replica(n, tmp_path, redis_url))
        for n in ("a", "b")
    ]
    brains = await asyncio.gather(*(ask(server, f"plush-{i}") for i, server in enumerate([a, b] * 4)))
    assert brains.count("gemini") == 3, brains  # the others: the local brain (or its busy line: 5 at once)
    assert len(fake_gemini.requests) == 3, "three requests a minute for both replicas together"


async def test_without_redis_each_server_has_a_budget_of_its_own(
    start_gemini_server: StartServer, fake_gemini: FakeGemini, tmp_path: Path
) -> None:
    a, b = [
        await start_gemini_server(gemini={"requests_per_minute": 1}, server=replica(n, tmp_path, None))
        for n in ("a", "b")
    ]
    assert [await ask(a, "plush-a"), await ask(b, "plush-b")] == ["gemini", "gemini"]
    assert len(fake_gemini.requests) == 2


async def test_concurrent_admissions_on_two_budgets_never_pass_the_last_slot_twice(
    redis_url: str, tmp_path: Path
) -> None:
    config = GeminiConfig(requests_per_minute=5, client_share=1.0)
    shared = [await SharedState.connect(redis_url) for _ in range(2)]
    stores = [await Store.open(tmp_path / f"{n}.db") for n in range(2)]
    budgets = [GeminiBudget(config, store, shared=s) for store, s in zip(stores, shared, strict=True)]
    prompt = Prompt("sys", (), "hi")
    refusals = await asyncio.gather(*(budgets[i % 2].admit(f"client-{i}", prompt) for i in range(24)))
    assert refusals.count(None) == 5
    assert set(refusals) == {None, "minute_budget_spent"}
    for resource in (*stores, *shared):
        await resource.close()


async def test_a_pause_asked_of_one_replica_holds_every_replica(redis_url: str, tmp_path: Path) -> None:
    config = GeminiConfig(client_share=1.0)
    shared = [await SharedState.connect(redis_url) for _ in range(2)]
    store = await Store.open(tmp_path / "plush.db")
    told, other = (GeminiBudget(config, store, shared=s) for s in shared)
    await told.share_pause(60)
    assert await other.admit("plush", Prompt("sys", (), "hi")) == "retry_after"
    await told.share_pause(1)  # a shorter pause does not cut the longer one
    assert await shared[1].client.pttl(SharedState.key("gemini", "paused")) > 50_000
    await store.close()
    for s in shared:
        await s.close()


async def test_an_unreachable_redis_stops_the_start_with_the_url(tmp_path: Path) -> None:
    stopped = RedisServer(tmp_path / "gone").start()
    stopped.stop()  # a port nobody listens on now
    with pytest.raises(PlushError, match=rf"cannot reach Redis at redis://127.0.0.1:{stopped.port}/0"):
        await SharedState.connect(stopped.url)
    with pytest.raises(PlushError, match="redis://"):
        await SharedState.connect("http://127.0.0.1:6379")
