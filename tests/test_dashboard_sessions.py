"""A login's reach ends with it: an open live log stops at logout, at a new password and at expiry, and what
someone says after that never reaches it. Real servers on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, chat, log_in, session_csrf

from plush.server.app import start_server
from plush.server.dashboard.passwords import password_file, set_password
from plush.server.dashboard.sessions import FAILURE_MEMORY_S, MAX_LOGIN_DELAY_S, LoginThrottle


async def serve(make_config: ConfigFactory, tmp_path: Path, **dashboard: Any) -> Any:
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 0.1, **dashboard},
        server={"port": 0, "database": str(tmp_path / "plush.db")},
    )
    set_password(password_file(config), PASSWORD)
    return await start_server(config)


@pytest.fixture
async def server(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[Any]:
    running = await serve(make_config, tmp_path)
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@asynccontextmanager
async def logged_in(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.dashboard.url, timeout=20) as client:
        assert (await log_in(client)).status_code == 303
        yield client


class LiveLog:
    """An open /api/stream: its events as (kind, data), in order, as they arrive."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.task = asyncio.create_task(self._read())
        assert (await self.next())[0] == "ready"

    async def next(self, timeout_s: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout_s)

    async def _read(self) -> None:
        async with self.client.stream("GET", "/api/stream") as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    await self.events.put((kind, json.loads(line.removeprefix("data:"))))
        await self.events.put(("closed", None))


async def test_an_open_live_log_ends_at_logout_and_never_shows_a_later_turn(server: Any) -> None:
    async with logged_in(server) as client:
        live = LiveLog(client)
        await live.open()
        token = await session_csrf(client)
        assert (await client.post("/logout", data={"csrf_token": token})).status_code == 303
        await chat(server.port, "a secret said AFTER logout")
        assert await live.next() == ("end", {"reason": "the session ended: log in again"})
        assert await live.next() == ("closed", None)
        assert (await client.get("/api/status")).status_code == 401


async def test_a_new_password_ends_every_login_and_its_live_log(server: Any) -> None:
    async with logged_in(server) as client:
        live = LiveLog(client)
        await live.open()
        set_password(password_file(server.dashboard.state.config), "a brand new password")
        await chat(server.port, "said after the password changed")
        assert (await live.next())[0] == "end"
        assert await live.next() == ("closed", None)
        assert (await client.get("/api/status")).status_code == 401
        assert (await log_in(client, "a brand new password")).status_code == 303
        assert (await client.get("/api/status")).status_code == 200


async def test_a_live_log_ends_when_its_login_expires(make_config: ConfigFactory, tmp_path: Path) -> None:
    running = await serve(make_config, tmp_path, session_hours=2 / 3600)  # two seconds
    try:
        async with logged_in(running) as client:
            live = LiveLog(client)
            await live.open()
            assert (await live.next())[0] == "end"
            assert await live.next() == ("closed", None)
            assert (await client.get("/api/status")).status_code == 401
    finally:
        await running.stop(grace=0.5)


async def test_the_login_throttle_forgets_old_addresses_and_keeps_no_idle_lock() -> None:
    now = [1000.0]
    throttle = LoginThrottle(0.5, clock=lambda: now[0])
    for n in range(5000):  # one wrong guess from each of 5,000 addresses, as a spread-out attack would
        client = f"10.0.{n // 250}.{n % 250}"
        async with throttle.lock(client):
            throttle.delay_after_failure(client)
    assert throttle.tracked() == 5000  # each still counts, so each one's next guess waits longer
    assert throttle.delay_after_failure("10.0.0.0") == 1.0
    now[0] += FAILURE_MEMORY_S + MAX_LOGIN_DELAY_S
    throttle.delay_after_failure("192.168.0.1")  # a later guess sweeps the forgotten addresses away
    assert throttle.tracked() == 1
    assert throttle.delay_after_failure("10.0.0.0") == 0.5  # forgotten: the delay starts small again
    waiting = [asyncio.create_task(_hold(throttle, "203.0.113.9")) for _ in range(3)]
    await asyncio.gather(*waiting)
    assert throttle.tracked() == 2  # the three checks' lock went with them


async def _hold(throttle: LoginThrottle, client: str) -> None:
    async with throttle.lock(client):
        await asyncio.sleep(0)
