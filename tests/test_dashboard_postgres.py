"""The dashboard's essential pages on the PostgreSQL store: the live log and its stream, search (PostgreSQL's own
text search), the reason filter, the per-device summary and the charts, read by `PostgresTurnLog`.

The same tests as tests/test_dashboard.py, run here with a `server` on a fresh database of the suite's real
PostgreSQL instead of a SQLite file: what the parent sees must not depend on the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import dashboard_server
from test_dashboard import (  # noqa: F401 - collected here, on PostgreSQL
    GOOD_PERSONA,
    logged_in,
    test_a_turn_appears_on_the_live_stream_and_in_search,
    test_charts_count_turns_and_the_local_share,
    test_devices_show_the_plush_online_with_its_address,
    test_html_in_what_was_said_is_shown_as_text,
    test_the_live_stream_sends_a_whole_backlog_not_only_its_first_batch,
    test_the_reason_filter_shows_the_safety_blocks_by_category,
    web,
)
from test_turn_rows import _full_turn

from plush.server.dashboard.queries import TurnFilter, TurnLog
from plush.server.store import Store, TurnRecord


@pytest.fixture
async def server(make_config: ConfigFactory, tmp_path: Path, postgres_url: str) -> AsyncIterator[Any]:
    """tests/test_dashboard.py's server, on PostgreSQL."""
    persona = tmp_path / "persona.toml"
    persona.write_text(GOOD_PERSONA.replace("Pip", "Momo"), encoding="utf-8")
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 0.2, "keep_audio": True},
        server={"port": 0, "database": postgres_url, "persona": str(persona)},
    )
    async with dashboard_server(config) as running:
        yield running


async def test_the_log_reads_back_the_stored_turn_and_cannot_change_the_store(postgres_url: str) -> None:
    turn = _full_turn()
    async with await Store.open(postgres_url) as store:
        await store.add_turn(turn)
        log = await TurnLog.open(postgres_url)
        try:
            logged = await log.turn(turn.id)
            found = await log.turns(TurnFilter(text='"quoted" rabb'))
            assert await log.turns(TurnFilter(text="rabbit giraffe")) == [], "every word is needed"
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await log._pool.execute("DELETE FROM turns")  # type: ignore[attr-defined]
        finally:
            await log.close()
        assert await store.get_turn(turn.id) == turn
    assert logged is not None and logged.record == turn
    assert [t.record.id for t in found] == [turn.id]


async def test_a_live_log_following_two_replicas_writing_at_once_misses_no_turn(postgres_url: str) -> None:
    replicas = [await Store.open(postgres_url) for _ in range(2)]
    log = await TurnLog.open(postgres_url)
    written = 150

    async def write(n: int, store: Store) -> None:
        async def plush(k: int) -> None:  # several plushes per replica, each turn its own transaction
            for i in range(k, written, 5):
                await store.add_turn(TurnRecord(f"r{n}-{i:03d}", f"c{n}-{k}", f"plush-{k}", "chat", f"turn {i}", "ok"))

        await asyncio.gather(*(plush(k) for k in range(5)))

    async def follow(done: asyncio.Event) -> list[str]:
        """What the live stream does (api.py): turns after the cursor, up to the newest row, cursor moved on."""
        seen: list[str] = []
        cursor = 0
        while not done.is_set() or len(seen) < 2 * written:
            upto = await log.last_rowid()
            for logged in await log.turns_after(cursor, TurnFilter(), upto=upto, limit=1000):
                seen.append(logged.record.id)
                cursor = logged.rowid
            if done.is_set() and cursor == await log.last_rowid():
                break
        return seen

    try:
        done = asyncio.Event()
        follower = asyncio.create_task(follow(done))
        async with asyncio.timeout(60):
            await asyncio.gather(*(write(n, store) for n, store in enumerate(replicas)))
            done.set()
            seen = await follower
    finally:
        await log.close()
        for store in replicas:
            await store.close()
    assert len(seen) == len(set(seen)) == 2 * written, f"{2 * written - len(set(seen))} turns never reached the log"
