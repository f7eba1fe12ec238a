"""Replicas on one Redis show each other's plushes and turns: replica B's live log shows a turn made on replica A
as it is stored, once, and B's devices page shows A's plush online until A dies, then offline within a bound.

Real servers (one database, one Redis from Debian's redis-server) on 127.0.0.1, over real HTTP and gRPC; the
replica that dies is a `plush server` process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import tomli_w
from conftest import ConfigFactory, config_sections, start_server_process
from fakes.dashboard_client import PASSWORD, chat, log_in
from test_telegram import wait_for
from tiny_models import TinyModels

from plush.server.app import RunningServer, start_server
from plush.server.dashboard.api import POLL_S
from plush.server.dashboard.passwords import password_file, set_password
from plush.server.dashboard.shared_presence import OFFLINE_WITHIN_S

Replica = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def replica(make_config: ConfigFactory, tmp_path: Path, redis_url: str) -> AsyncIterator[Replica]:
    """Start replicas that share one database, one password and one Redis (`redis=None`: without it)."""
    running: list[RunningServer] = []

    async def start(redis: str | None = redis_url) -> RunningServer:
        config = make_config(
            dashboard={"port": 0, "login_delay_s": 0.1},
            server={"port": 0, "database": str(tmp_path / "plush.db"), "redis": redis},
        )
        if not password_file(config).exists():
            set_password(password_file(config), PASSWORD)
        server = await start_server(config)
        running.append(server)
        return server

    yield start
    for server in running:
        await server.stop(grace=0.5)


@asynccontextmanager
async def logged_in(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    assert server.dashboard is not None
    async with httpx.AsyncClient(base_url=server.dashboard.url, timeout=20) as client:
        assert (await log_in(client)).status_code == 303
        yield client


class LiveLog:
    """The turns a dashboard's live log (/api/stream) shows, as they come, with when each came. A turn may come
    twice: while under way (stored as interrupted, `replica_lost`) and as it ended, which the page shows in its
    place (live.js)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.turns: list[tuple[str, str, float]] = []
        self.ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async with self.client.stream("GET", "/api/stream") as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                    if kind == "ready":
                        self.ready.set()
                elif line.startswith("data:") and kind == "turn":
                    turn = json.loads(line.removeprefix("data:"))
                    self.turns.append((turn["id"], turn["outcome"], time.monotonic()))

    def shown(self) -> list[str]:
        """The turns on the page, in the order they first came (a turn that came again replaced itself)."""
        return list(dict.fromkeys(turn_id for turn_id, _, _ in self.turns))

    def ended_at(self, turn_id: str) -> float | None:
        """When the turn came as it ended (answered), or None."""
        return next((t for i, outcome, t in self.turns if i == turn_id and outcome == "answered"), None)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_replica_bs_live_log_shows_a_turn_made_on_replica_a_at_once_and_once(replica: Replica) -> None:
    a, b = await replica(), await replica()
    async with logged_in(b) as on_b:
        live = LiveLog(on_b)
        try:
            await asyncio.wait_for(live.ready.wait(), 10)
            made = []
            for n in range(3):
                turn_id = await chat(a.port, f"Hello from the first replica, {n}.", device="kid")
                said_at = time.monotonic()
                await wait_for(partial(_shows, live, turn_id), within_s=10)
                made.append((turn_id, said_at))
            own = await chat(b.port, "And hello from the second one.", device="kid")
            await wait_for(partial(_shows, live, own), within_s=10)
        finally:
            await live.close()
    assert live.shown() == [*(turn_id for turn_id, _ in made), own], "each turn, in order"
    assert [turn_id for turn_id, outcome, _ in live.turns if outcome == "answered"] == live.shown(), "ended once"
    lags = [(live.ended_at(turn_id) or 0.0) - said_at for turn_id, said_at in made]
    # before: B's live log found A's turns at its next poll only (up to POLL_S later)
    assert max(lags) < POLL_S / 2, f"shown {max(lags):.2f} s after the reply on A"


async def test_a_plush_on_replica_a_is_online_on_replica_b_until_a_is_killed(
    models: TinyModels, tmp_path: Path, redis_url: str, replica: Replica
) -> None:
    sections = config_sections(models, tmp_path)
    sections["server"]["redis"] = redis_url
    sections["dashboard"] = {"enabled": False}  # the dashboard is on B only, as in docs/deploy/cluster.md
    config_file = tmp_path / "plush.toml"
    config_file.write_text(tomli_w.dumps(sections), encoding="utf-8")
    b = await replica()
    proc, address = start_server_process(config_file)
    try:
        async with logged_in(b) as on_b:

            async def kid_online() -> bool | None:
                rows = {row["id"]: row for row in (await on_b.get("/api/devices")).json()}
                return rows["kid"]["online"] if "kid" in rows else None

            await chat(int(address.rsplit(":", 1)[1]), "Hello from the nursery.", device="kid")
            assert await wait_for(kid_online, within_s=10) is True, "online on B, though it talks to A"
            status = (await on_b.get("/api/status")).json()
            assert status["online"] == 1
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            killed_at = time.monotonic()
            await wait_for(lambda: _is_false(kid_online()), within_s=OFFLINE_WITHIN_S + 10)
            took = time.monotonic() - killed_at
        # online_window_s is 300 s: without the bound, a dead replica's plush would show online for 5 minutes
        assert took < OFFLINE_WITHIN_S + 2, f"offline {took:.1f} s after the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _shows(live: LiveLog, turn_id: str) -> bool:
    """The turn came to the live log as it ended."""
    return live.ended_at(turn_id) is not None


async def _is_false(online: Awaitable[bool | None]) -> bool:
    return not await online


async def test_without_redis_a_replica_shows_only_its_own_plushes(replica: Replica) -> None:
    a, b = await replica(redis=None), await replica(redis=None)
    await chat(a.port, "Hello.", device="kid")
    assert a.presence is not None and b.presence is not None
    assert a.presence.get("kid") is not None
    assert b.presence.get("kid") is None, "one process keeps its presence to itself, as before"
    assert a.sharing is None and b.sharing is None
