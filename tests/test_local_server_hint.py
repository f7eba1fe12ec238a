"""A plush on the server's own computer tells a server still loading its models from one that died."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from plush import local_server
from plush.device.client import CompanionClient, UnreachableError


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port with nothing listening on it, and no note left behind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
    local_server.withdraw(port)


def note(port: int, pid: int, state: str) -> None:
    local_server.note_path(port).write_text(f'{{"pid": {pid}, "state": "{state}"}}')


async def test_a_plush_waiting_for_a_local_server_that_died_is_told_at_once(silent_port: int) -> None:
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    note(silent_port, dead.pid, "loading")
    started = time.monotonic()
    async with CompanionClient(f"127.0.0.1:{silent_port}", "hint-test") as client:
        with pytest.raises(UnreachableError, match=rf"pid {dead.pid}\) ended without stopping: it crashed"):
            await client.wait_ready(60)
    assert time.monotonic() - started < 30, "no waiting out the whole timeout for a server that is gone"


async def test_a_plush_waiting_for_a_local_server_still_loading_says_so(silent_port: int) -> None:
    loading = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        note(silent_port, loading.pid, "loading")
        async with CompanionClient(f"127.0.0.1:{silent_port}", "hint-test") as client:
            with pytest.raises(UnreachableError, match=r"within 1.5 s: the server here .* is still loading its models"):
                await client.wait_ready(1.5)
    finally:
        loading.kill()
        await loading.wait()


async def test_without_a_note_the_plush_asks_whether_a_server_runs(silent_port: int) -> None:
    async with CompanionClient(f"127.0.0.1:{silent_port}", "hint-test") as client:
        with pytest.raises(UnreachableError, match=r"is `plush server` running\?"):
            await client.wait_ready(0.5)


async def test_a_server_notes_it_is_serving_and_withdraws_the_note_when_it_stops(
    make_config: Any, silent_port: int
) -> None:
    from plush.server.app import start_server

    server = await start_server(
        make_config(server={"port": silent_port, "database": str(make_config().server.database_path())})
    )
    try:
        assert local_server.unreachable_hint(f"127.0.0.1:{silent_port}").text.endswith("running but does not answer")
    finally:
        await server.stop(grace=0)
    assert not local_server.note_path(silent_port).exists()
