"""The store's contract, run against both engines: SQLite (a file, the default) and PostgreSQL (a real server from
Debian's packages, started by the suite). What the brain, the dashboard and the CLI rely on must hold on both."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from plush.server.store import Pairing, Store, StoreError, TurnRecord
from plush.server.store.sqlite import MIGRATIONS

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "plush.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def open_store(location: str) -> AsyncIterator[OpenStore]:
    """Open the test's store (as many times as a test has replicas); all are closed after it."""
    opened: list[Store] = []

    async def open_one() -> Store:
        opened.append(await Store.open(location))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


def turn(turn_id: str, user: str, reply: str = "ok", **fields: Any) -> TurnRecord:
    fields.setdefault("owner", "home")
    return TurnRecord(turn_id, fields.pop("conversation_id", "room"), "plush", "chat", user, reply, **fields)


async def test_turns_are_kept_whole_listed_newest_first_and_updated(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.schema_version() == len(MIGRATIONS), "both engines report the one schema version"
    first = turn("t1", "안녕 모모", "안녕!", started_at=1000.0, language="ko", voices="espeak-ng ko", speculations=2)
    await store.add_turn(first)
    await store.add_turn(turn("t2", "hello", started_at=2000.0, timings={"first_audio": 310.5}))
    assert await store.get_turn("t1") == first
    assert [t.id for t in await store.list_turns(limit=10)] == ["t2", "t1"]
    assert await store.add_timing("t2", "first_audio_played", 402.25)
    assert (await store.get_turn("t2")).timings == {"first_audio": 310.5, "first_audio_played": 402.2}  # type: ignore[union-attr]
    assert await store.mark_failed("t2", "not delivered")
    assert await store.mark_failed("t2", "again")
    failed = await store.get_turn("t2")
    assert failed is not None and failed.outcome == "error" and failed.error == "not delivered; again"
    assert not await store.mark_failed("missing", "x")
    assert await store.delete_turns_before(1500.0) == 1
    assert [t.id for t in await store.list_turns(limit=10)] == ["t2"]


async def test_the_window_is_the_owners_own_since_the_last_reset(open_store: OpenStore) -> None:
    store = await open_store()
    await store.add_turn(turn("a", "one", started_at=1.0))
    await store.add_turn(turn("b", "someone else's", started_at=2.0, owner="other"))
    await store.add_turn(turn("c", "blocked", started_at=3.0, outcome="blocked"))
    await store.add_turn(turn("d", "two", started_at=4.0))
    assert [t.id for t in await store.recent_turns("room", 5, owner="home")] == ["a", "d"]
    await store.reset_conversation("room")
    assert await store.recent_turns("room", 5, owner="home") == []
    [conversation] = await store.list_conversations()
    assert conversation.id == "room" and conversation.turns == 4 and conversation.owner == "home"


async def test_recall_finds_korean_stems_and_english_plurals_of_the_owner_only(open_store: OpenStore) -> None:
    store = await open_store()
    await store.add_turn(turn("k", "내 토끼를 봤어?", "토끼가 귀여워!"))
    await store.add_turn(turn("e", "I have two rabbits", "Rabbits love carrots."))
    await store.add_turn(turn("x", "토끼 rabbit", "theirs", owner="other"))
    await store.add_turn(turn("q", 'say "NEAR" AND OR * \' : | !', "ok"))
    assert [t.id for t in await store.search_turns(["토끼"], limit=5, owner="home")] == ["k"]
    assert [t.id for t in await store.search_turns(["rabbit"], limit=5, owner="home")] == ["e"]
    found = await store.search_turns(["rabbit", "토끼"], limit=5, owner="home", exclude=["e"])
    assert [t.id for t in found] == ["k"]
    assert [t.id for t in await store.search_turns(["'", ":", "|", "!", "*"], limit=5, owner="home")] == []
    assert [t.id for t in await store.search_turns(["NEAR"], limit=5, owner="home")] == ["q"]
    assert await store.search_turns(["   "], limit=5, owner="home") == []


async def test_facts_belong_to_an_owner_and_move_without_doubling(open_store: OpenStore) -> None:
    store = await open_store()
    bunny = await store.add_fact("Mina  loves bunnies", "chat", owner="mina")
    assert bunny.text == "Mina loves bunnies"
    assert (await store.add_fact("Mina loves bunnies", "chat", owner="mina")).id == bunny.id
    kept = await store.add_fact("Mina loves bunnies", "telegram", owner="home")
    assert [f.id for f in await store.list_facts("mina")] == [bunny.id]
    moved = await store.move_fact(bunny.id, "home")
    assert moved is not None and moved.id == kept.id, "the new owner's copy is kept, the moved one dropped"
    assert await store.list_facts("mina") == [] and len(await store.all_facts()) == 1
    assert await store.move_fact(999_999, "home") is None
    assert await store.remove_fact(kept.id) and not await store.remove_fact(kept.id)
    with pytest.raises(StoreError):
        await store.add_fact("   ", "chat", owner="home")


async def test_two_replicas_share_one_store_told_on_one_recalled_on_the_other(open_store: OpenStore) -> None:
    replica_a, replica_b = await open_store(), await open_store()
    await replica_a.add_turn(turn("told", "My rabbit is called Snowball", "Snowball is a lovely name!"))
    await replica_a.add_fact("The rabbit is called Snowball", "chat", owner="home")
    assert [t.id for t in await replica_b.search_turns(["Snowball"], limit=3, owner="home")] == ["told"]
    assert [f.text for f in await replica_b.list_facts("home")] == ["The rabbit is called Snowball"]

    async def count(store: Store) -> None:
        for _ in range(20):
            await store.add_usage("2026-12-04", "gemini")

    await asyncio.gather(count(replica_a), count(replica_b))
    assert await replica_a.usage("2026-12-04", "gemini") == 40, "no count lost between replicas"
    assert await replica_b.usage("2026-12-04", "other") == 0


async def test_a_plush_paired_on_one_replica_is_known_to_the_other_until_removed(open_store: OpenStore) -> None:
    replica_a, replica_b = await open_store(), await open_store()
    nursery = Pairing("nursery", "a" * 64, "2026-12-04T02:00:00+00:00")
    assert await replica_a.add_pairing(nursery)
    assert await replica_b.pairings("nursery") == [nursery]
    assert not await replica_b.add_pairing(Pairing("nursery", "b" * 64, "")), "an existing pairing is kept"
    assert await replica_b.add_pairing(Pairing("nursery", "c" * 64, "later"), replace=True)
    await replica_a.add_pairing(Pairing("kitchen", "d" * 64, ""))
    assert [(p.name, p.token_sha256) for p in await replica_a.pairings()] == [
        ("kitchen", "d" * 64),
        ("nursery", "c" * 64),
    ]
    assert await replica_a.remove_pairing("nursery") and not await replica_b.remove_pairing("nursery")
    assert await replica_b.pairings("nursery") == []


async def test_a_turn_under_way_is_stored_as_lost_until_its_end_replaces_it(open_store: OpenStore) -> None:
    replica_a, replica_b = await open_store(), await open_store()
    await replica_a.add_turn(turn("before", "hello", "hi!", started_at=1.0))
    for turn_id, said in (("lost", "tell me about rabbits"), ("going", "tell me about carrots")):
        await replica_a.begin_turn(turn(turn_id, said, "", started_at=2.0 if turn_id == "lost" else 3.0))
    assert await replica_a.note_reply("lost", "Rabbits hop")
    assert await replica_a.note_reply("lost", "Rabbits hop and dig.")
    assert await replica_a.note_reply("going", "Carrots are orange.")

    lost = await replica_b.get_turn("lost")  # replica A dies here: its 'lost' turn never ends
    assert lost is not None and (lost.outcome, lost.ending, lost.interrupted) == ("interrupted", "replica_lost", True)
    assert (lost.user_text, lost.reply_text) == ("tell me about rabbits", "Rabbits hop and dig.")
    assert [t.id for t in await replica_b.recent_turns("room", 5, owner="home")] == ["before"], "no prompt has them"
    assert await replica_b.search_turns(["rabbits", "carrots"], limit=5, owner="home") == []

    ended = turn("going", "tell me about carrots", "Carrots are orange and crunchy.", started_at=3.0)
    ended.timings = {"total": 900.0}
    await replica_a.add_turn(ended)
    assert await replica_b.get_turn("going") == ended, "its end replaced the row it had under way"
    assert [t.id for t in await replica_b.list_turns(limit=10)] == ["going", "lost", "before"], "each turn once"
    assert [t.id for t in await replica_b.search_turns(["carrots"], limit=5, owner="home")] == ["going"]
    assert [t.id for t in await replica_b.recent_turns("room", 5, owner="home")] == ["before", "going"]
    [conversation] = await replica_b.list_conversations()
    assert conversation.turns == 3

    assert not await replica_a.note_reply("going", "Carrots"), "a late write of the turn under way changes nothing"
    await replica_a.begin_turn(turn("going", "tell me about carrots", "", started_at=3.0))
    assert await replica_b.get_turn("going") == ended
    assert not await replica_a.note_reply("never-began", "hello")


async def test_an_unreachable_postgresql_is_a_clear_error_without_its_password() -> None:
    shown = re.escape("cannot open the database postgresql://plush@127.0.0.1:9/plush")
    with pytest.raises(StoreError, match=shown) as caught:
        await Store.open("postgresql://plush:secret@127.0.0.1:9/plush")
    assert "secret" not in str(caught.value)
