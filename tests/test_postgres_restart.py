"""A PostgreSQL restart costs no store call: the replica's pooled connections die with it, and the next call waits
for the database and goes through (bench/cluster.py restarts PostgreSQL under load; before this, the first
statement on each dead connection failed, and with it a turn the brain had answered)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from postgres_server import PostgresServer

from plush.server.store import Store, TurnRecord
from plush.server.store import postgres as postgres_store


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own: restarting the session's would disturb the other tests."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def turn(turn_id: str, text: str) -> TurnRecord:
    return TurnRecord(turn_id, "room", "plush", "chat", text, "ok", owner="home")


async def test_store_calls_made_while_the_database_restarts_go_through(own_postgres: PostgresServer) -> None:
    url = own_postgres.create_database("plush_restart")
    async with await Store.open(url) as store:
        await store.add_turn(turn("before", "Hello before the restart"))
        restart = asyncio.create_task(asyncio.to_thread(own_postgres.restart))
        made = 0
        while not restart.done():  # turns stored while the server shuts down, is down, and starts again
            await store.add_turn(turn(f"during-{made}", "Still there?"))
            await store.add_usage("2026-12-04", "gemini_requests")
            made += 1
        await restart
        await store.add_turn(turn("after", "Hello after the restart"))

        stored = {t.id for t in await store.list_turns(limit=made + 10)}
        assert stored == {"before", "after", *(f"during-{i}" for i in range(made))}, "nothing lost"
        assert await store.usage("2026-12-04", "gemini_requests") >= made


async def test_a_database_that_stays_away_fails_the_call_after_the_wait(
    own_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_store, "RECONNECT_S", 1.0)
    url = own_postgres.create_database("plush_away")
    async with await Store.open(url) as store:
        own_postgres.stop()
        with pytest.raises((OSError, postgres_store.asyncpg.PostgresError)):
            await store.add_turn(turn("lost", "Is anybody there?"))
