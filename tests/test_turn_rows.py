"""The one definition of the `turns` table's columns and full-text queries, as the store and the dashboard's
read-only log both use it."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from plush.server.dashboard.queries import TurnFilter, TurnLog
from plush.server.store import Store, TurnRecord
from plush.server.store.turn_rows import TURN_COLUMNS, fts_query


def _full_turn() -> TurnRecord:
    return TurnRecord(
        id="t1",
        conversation_id="c1",
        device_id="bunny",
        source="device",
        user_text='the "quoted" rabbit',
        reply_text="rabbits hop",
        language="en",
        backend="gemini",
        backend_reason="quota",
        timings={"stt": 12.5, "llm": 40.0},
        error="tts: slow",
        started_at=1_700_000_000.0,
        prompt_tokens=7,
        output_tokens=3,
        outcome="interrupted",
        ending="barge_in",
        safety="output:weapons",
        owner="household:home",
    )


def test_every_field_of_a_turn_has_its_column() -> None:
    fields = {field.name for field in dataclasses.fields(TurnRecord)}
    assert fields <= set(TURN_COLUMNS)


async def test_the_store_and_the_read_only_log_read_back_the_same_turn(tmp_path: Path) -> None:
    turn = _full_turn()
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(turn)
        stored = await store.get_turn("t1")
        log = await TurnLog.open(tmp_path / "plush.db")
        try:
            logged = await log.turn("t1")
            found = await log.turns(TurnFilter(text='"quoted" rabb'))
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await log._db.execute("DELETE FROM turns")
        finally:
            await log.close()
    assert stored == turn
    assert logged is not None and logged.record == turn
    assert [t.record.id for t in found] == ["t1"]


async def test_recall_and_the_log_search_quote_words_alike(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(_full_turn())
        recalled = await store.search_turns(['"quoted"', "NEAR(", '"'], limit=5, owner="household:home")
    assert [t.id for t in recalled] == ["t1"]
    assert fts_query(['"quoted"', "NEAR(", '"'], operator="OR") == '"""quoted"""*' + ' OR "NEAR("*'
    assert fts_query(["a", '""', "b", "c"], most=2) == '"a"* AND "b"*'


async def test_a_turn_that_ends_after_a_later_one_reaches_the_live_log_once_as_it_ended(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        log = await TurnLog.open(tmp_path / "plush.db")
        try:
            await store.begin_turn(TurnRecord("story", "room", "bunny", "device", "tell me a long story"))
            await store.add_turn(TurnRecord("quick", "room", "bear", "device", "hi", "hello"))
            [shown_last, shown_before] = await log.turns(TurnFilter())  # what the live log has shown so far
            await store.add_turn(TurnRecord("story", "room", "bunny", "device", "tell me a long story", "Once..."))
            fresh = await log.turns_after(shown_last.rowid, TurnFilter())
            listed = await log.turns(TurnFilter())
        finally:
            await log.close()
    assert (shown_before.record.id, shown_before.record.ending) == ("story", "replica_lost"), "shown under way"
    assert [(t.record.id, t.record.outcome) for t in fresh] == [("story", "answered")], "the live log gets its end"
    assert [t.record.id for t in listed] == ["story", "quick"], "and lists it once"


async def test_a_turn_alone_in_flight_reaches_the_live_log_again_when_it_ends(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        log = await TurnLog.open(tmp_path / "plush.db")
        try:
            await store.begin_turn(TurnRecord("story", "room", "bunny", "device", "tell me a long story"))
            [shown] = await log.turns(TurnFilter())  # the newest row: SQLite would give its rowid to the next one
            await store.add_turn(TurnRecord("story", "room", "bunny", "device", "tell me a long story", "Once..."))
            fresh = await log.turns_after(shown.rowid, TurnFilter())
        finally:
            await log.close()
    assert shown.record.ending == "replica_lost"
    assert [(t.record.id, t.record.outcome) for t in fresh] == [("story", "answered")], "the live log gets its end"
