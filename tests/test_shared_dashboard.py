"""Dashboard replicas on one Redis: a login made on one is valid on the others and outlives a restart, and
logging out ends it everywhere.

Real servers (one database, one Redis from Debian's redis-server) on 127.0.0.1, over real HTTP and gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, log_in, session_csrf

from plush.server.app import RunningServer, start_server
from plush.server.dashboard.passwords import password_file, set_password
from plush.server.dashboard.sessions import COOKIE

Replica = Callable[[], Awaitable[RunningServer]]


@pytest.fixture
async def replica(make_config: ConfigFactory, tmp_path: Path, redis_url: str) -> AsyncIterator[Replica]:
    """Start replicas that share one database, one password and one Redis; all stop at the end."""
    running: list[RunningServer] = []

    async def start() -> RunningServer:
        config = make_config(
            dashboard={"port": 0, "login_delay_s": 0.1},
            server={"port": 0, "database": str(tmp_path / "plush.db"), "redis": redis_url},
        )
        if not password_file(config).exists():  # set once: a new hash is a new password, ending every login
            set_password(password_file(config), PASSWORD)
        server = await start_server(config)
        running.append(server)
        return server

    yield start
    for server in running:
        if server.dashboard is not None and not server.dashboard.state.feed.closed.is_set():
            await server.stop(grace=0.5)


def dashboard_of(server: RunningServer, cookie: str | None = None) -> httpx.AsyncClient:
    assert server.dashboard is not None
    cookies = {COOKIE: cookie} if cookie else None
    return httpx.AsyncClient(base_url=server.dashboard.url, timeout=20, cookies=cookies)


async def signed_in(client: httpx.AsyncClient) -> bool:
    response = await client.get("/api/status")
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def test_a_login_on_one_replica_is_valid_on_another_and_logout_ends_it_everywhere(replica: Replica) -> None:
    a, b = await replica(), await replica()
    async with dashboard_of(a) as on_a:
        assert (await log_in(on_a)).status_code == 303
        cookie = on_a.cookies[COOKIE]
        async with dashboard_of(b, cookie) as on_b:
            assert await signed_in(on_b), "the session made on A opens B's dashboard"
            token = await session_csrf(on_b)  # the same session's CSRF token, read from B
            assert (await on_b.post("/logout", data={"csrf_token": token})).status_code == 303
        assert not await signed_in(on_a), "logged out on B: A refuses the cookie too"


async def test_a_login_survives_the_restart_of_every_replica(replica: Replica) -> None:
    first = await replica()
    async with dashboard_of(first) as client:
        assert (await log_in(client)).status_code == 303
        cookie = client.cookies[COOKIE]
    await first.stop(grace=0.5)
    restarted = await replica()
    async with dashboard_of(restarted, cookie) as client:
        assert await signed_in(client)


async def test_a_forged_cookie_opens_no_replica(replica: Replica) -> None:
    a = await replica()
    async with dashboard_of(a, "not-a-session") as client:
        assert not await signed_in(client)
