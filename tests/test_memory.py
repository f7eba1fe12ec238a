"""Memory: the window, long-term facts across restarts, full-text recall (Korean and English), reset, retention.

The prompt a backend really receives is checked at the fake Gemini server, so these tests see what the model
sees, after the real google-genai client serialised it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import StartServer
from fakes.gemini import FakeGemini

from plush.config import MemoryConfig
from plush.device.client import CompanionClient
from plush.server.app import RunningServer
from plush.server.memory import Memory, extract_fact, search_terms
from plush.server.store import Store, TurnRecord
from plush.server.store.sqlite import MIGRATIONS

Start = Callable[..., Awaitable[RunningServer]]
OWNER = "device:memory-test"
"""The owner of every turn `say` takes: the client `memory-test`, in no household."""


UNLIMITED = {"requests_per_day": 0, "requests_per_minute": 0}


@pytest.fixture
def start(start_gemini_server: StartServer) -> Start:
    """Start Gemini-backed servers on one database, with `[memory]` settings overridden."""

    async def start_with(**memory: Any) -> RunningServer:
        return await start_gemini_server(gemini=UNLIMITED, memory=memory)  # type: ignore[no-any-return]

    return start_with


async def say(server: RunningServer, text: str, conversation: str = "nursery") -> str:
    async with CompanionClient(f"127.0.0.1:{server.port}", "memory-test") as client:
        events = [e async for e in client.chat(text, conversation_id=conversation)]
    return "".join(e.text_delta.text for e in events)


def last_user_message(fake: FakeGemini) -> str:
    role, text = fake.last_request.turns[-1]
    assert role == "user"
    return text


async def test_a_fact_told_in_one_session_is_in_a_later_sessions_prompt_after_a_restart(
    start: Start, fake_gemini: FakeGemini
) -> None:
    first = await start()
    await say(first, "Remember that my cat is called Nabi.", conversation="device:plush")
    await first.stop(grace=0)

    second = await start()  # same database, new process state
    await say(second, "What is my cat called?", conversation="telegram:42")
    prompt = last_user_message(fake_gemini)
    assert "my cat is called Nabi" in prompt
    assert prompt.endswith("What is my cat called?"), "the owner's words come last, after the memory note"
    assert fake_gemini.last_request.system_instruction == second.companion.persona.system_prompt
    facts = await second.companion.store.all_facts()
    assert [(f.text, f.source, f.owner) for f in facts] == [("my cat is called Nabi", "device:plush", OWNER)]


async def test_the_window_drops_the_oldest_turns(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(history_turns=2, recall_turns=0)
    for text in ("One.", "Two.", "Three."):
        await say(server, text)
    await say(server, "Four.")
    examples = len(server.companion.persona.examples)  # the persona's examples open every conversation
    users = [text for role, text in fake_gemini.last_request.turns[examples:] if role == "user"]
    assert users == ["Two.", "Three.", "Four."]


async def test_recall_finds_an_older_turn_by_its_words_in_english(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(history_turns=1)
    fake_gemini.reply("Bunny is a lovely name for a rabbit!")
    await say(server, "My rabbit is called Bunny.")
    for text in ("I had soup today.", "The sky is grey."):
        await say(server, text)
    await say(server, "Do you know my rabbits name?")
    prompt = last_user_message(fake_gemini)
    assert "Owner said: My rabbit is called Bunny." in prompt
    assert "soup" not in prompt, "only turns that share words are recalled"


async def test_recall_finds_an_older_turn_by_its_words_in_korean(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(history_turns=1)
    fake_gemini.reply("솜이라니 정말 귀여운 이름이에요!")
    await say(server, "우리 토끼 이름은 솜이야.")
    for text in ("오늘 비가 왔어.", "점심은 국수였어."):
        await say(server, text)
    await say(server, "내 토끼가 보고 싶어.")  # 토끼가 (subject) recalls 토끼 (bare)
    prompt = last_user_message(fake_gemini)
    assert "우리 토끼 이름은 솜이야." in prompt and "솜이라니" in prompt
    assert "국수" not in prompt


async def test_recall_stays_within_the_conversation_by_default(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(history_turns=0)
    await say(server, "My secret word is pineapple.", conversation="telegram:1")
    await say(server, "What is the secret word?", conversation="telegram:2")
    assert "pineapple" not in last_user_message(fake_gemini)
    await say(server, "What is the secret word?", conversation="telegram:1")
    assert "pineapple" in last_user_message(fake_gemini)


async def test_a_reset_conversation_starts_with_an_empty_window(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(recall_turns=0)
    await say(server, "Hello there.")
    await server.companion.store.reset_conversation("nursery")
    await say(server, "Who am I?")
    examples = len(server.companion.persona.examples)
    assert fake_gemini.last_request.turns[examples:] == [("user", "Who am I?")]


async def test_facts_and_recall_stay_within_the_token_budget(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        for i in range(20):
            await store.add_fact(f"fact number {i} is about a rather long and detailed thing", "cli", owner="home")
        memory = Memory(store, MemoryConfig(max_tokens=60))
        recollection = await memory.recollect("room", "hello", owner="home")
        assert 0 < len(recollection.facts) < 20
        assert recollection.facts[-1].text.startswith("fact number 19"), "the newest facts win"
        prompt, _ = await memory.prompt("system", "room", "hello", owner="home")
        note_tokens = len(prompt.memory.encode()) / 3
        assert note_tokens < 60 + 40, "the note is about the budget (plus its fixed headings)"


async def test_no_memory_note_when_there_is_nothing_to_add(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        prompt, _ = await Memory(store, MemoryConfig()).prompt("system", "room", "Hello!", owner="device:d")
    assert prompt.memory == "" and prompt.user_content == "Hello!"


async def test_retention_deletes_old_turns_and_their_recall_but_keeps_facts(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(TurnRecord("old", "room", "d", "chat", "my old rabbit", "nice", started_at=1_000.0))
        await store.add_turn(TurnRecord("new", "room", "d", "chat", "my new rabbit", "nice", started_at=99_000.0))
        await store.add_fact("likes rabbits", source="cli", owner="device:d")
        memory = Memory(store, MemoryConfig(retention_days=1))
        assert await memory.prune(now=100_000.0) == 1
        assert [t.id for t in await store.list_turns()] == ["new"]
        assert [t.id for t in await store.search_turns(["rabbit"], limit=5, owner="device:d")] == ["new"]
        assert [f.text for f in await store.list_facts("device:d")] == ["likes rabbits"]
        assert await Memory(store, MemoryConfig(retention_days=0)).prune(now=1e12) == 0


async def test_turns_stored_before_the_memory_upgrade_are_recalled(tmp_path: Path) -> None:
    db = tmp_path / "plush.db"
    with sqlite3.connect(db) as conn:  # a database as the walking skeleton left it
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            conn.executescript(f"{script}; PRAGMA user_version={number};")
        conn.execute(
            "INSERT INTO turns (id, conversation_id, device_id, source, started_at, user_text, reply_text)"
            " VALUES ('t1', 'room', 'd', 'chat', 1.0, 'I love dinosaurs', 'Roar!')"
        )
    async with await Store.open(db) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert [t.id for t in await store.search_turns(["dinosaur"], limit=3, owner="device:d")] == ["t1"]
        assert [c.id for c in await store.list_conversations()] == ["room"]


async def test_search_treats_user_words_as_words_not_query_syntax(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(TurnRecord("t1", "room", "d", "chat", 'say "NEAR" AND OR *', "ok"))
        assert await store.search_turns(['"near', "AND", "*", "OR("], limit=3, owner="device:d") != []


async def test_a_fact_is_stored_once_and_can_be_forgotten(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        first = await store.add_fact("  likes   rabbits ", source="a", owner="home")
        again = await store.add_fact("likes rabbits", source="b", owner="home")
        assert first.id == again.id and first.text == "likes rabbits"
        assert await store.remove_fact(first.id)
        assert not await store.remove_fact(first.id)
        assert await store.all_facts() == []


@pytest.mark.parametrize(
    ("text", "fact"),
    [
        ("Remember that my birthday is May 3.", "my birthday is May 3"),
        ("please remember: Mina likes rabbits", "Mina likes rabbits"),
        ("Hey Momo, don't forget that I have a cat named Nabi!", "I have a cat named Nabi"),
        ("Do you remember me?", None),
        ("I remember the sea.", None),
        ("기억해 줘: 내 생일은 5월 3일이야", "내 생일은 5월 3일이야"),
        ("내 생일은 5월 3일이야. 기억해 줘!", "내 생일은 5월 3일이야"),
        ("나는 토끼를 좋아한다는 거 꼭 기억해", "나는 토끼를 좋아한다"),
        ("내 이름은 민아라는 거 기억해 줘요", "내 이름은 민아"),
        ("뭐 기억해?", None),
        ("remember my name?", None),
        ("Remember when we went to the park.", None),
        ("내 이름 기억해?", None),
        ("Remember that. Also what's the weather?", None),
    ],
)
def test_explicit_requests_to_remember_are_recognised(text: str, fact: str | None) -> None:
    assert extract_fact(text) == fact


def test_search_terms_drop_stop_words_and_korean_particles() -> None:
    assert search_terms("What did I say about my rabbit Bunny?") == ["say", "rabbit", "bunny"]
    assert search_terms("내 토끼를 기억해? 토끼가 좋아") == ["토끼", "좋아"]


def test_memory_commands_add_list_forget_facts_and_reset_a_conversation(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "plush.toml"
    config.write_text(f"[server]\ndatabase = '{tmp_path / 'plush.db'}'\n", encoding="utf-8")

    def plush(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "plush", "memory", *args, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert "No facts yet" in plush("facts").stdout
    added = plush("remember", "Mina's birthday is May 3", "--owner", "device:nursery")
    assert added.returncode == 0 and "remembered fact 1 for device:nursery" in added.stdout
    assert "Mina's birthday is May 3" in plush("facts").stdout
    assert plush("forget", "1").returncode == 0
    missing = plush("forget", "1")
    assert missing.returncode == 1 and "there is no fact 1" in missing.stderr
    unknown = plush("reset", "device:nobody")
    assert unknown.returncode == 1 and "no conversation 'device:nobody'" in unknown.stderr


async def test_recall_survives_a_vacuum(tmp_path: Path) -> None:
    db = tmp_path / "plush.db"
    async with await Store.open(db) as store:
        for i in range(5):
            await store.add_turn(TurnRecord(f"t{i}", "room", "d", "chat", f"word{i} pineapple", "ok", started_at=i))
        await store.delete_turns_before(2.5)  # leaves holes in the rowids
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM")
    async with await Store.open(db) as store:
        found = await store.search_turns(["word4"], limit=5, owner="device:d")
        assert [t.id for t in found] == ["t4"] and found[0].user_text == "word4 pineapple"


async def test_every_turn_is_stored_while_other_turns_read_and_write_the_same_database(tmp_path: Path) -> None:
    # Under load (bench/load.py, 16-32 plushes) reads, writes and commits of many turns interleave on the
    # store's one connection; a read left between its execute and its fetch made another turn's commit fail.
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(TurnRecord("seed", "room", "d", "chat", "rabbits and carrots", "yes", owner="home"))

        jitter = random.Random(7)  # turns out of step with each other, as real ones are

        async def turn(i: int) -> None:
            await asyncio.sleep(jitter.random() * 0.05)
            await store.recent_turns("room", 8, owner="home")
            await store.search_turns(["rabbits", "carrots"], limit=3, owner="home")
            await store.list_facts("home")
            await store.add_usage("2026-12-02", "gemini")
            await asyncio.sleep(jitter.random() * 0.01)
            await store.add_turn(TurnRecord(f"t{i}", "room", "d", "chat", f"rabbit {i}", "ok", owner="home"))
            await store.add_timing(f"t{i}", "first_audio_played", 12.5)

        await asyncio.gather(*(turn(i) for i in range(300)))
        stored = {t.id for t in await store.list_turns(limit=500)}
        assert stored == {"seed"} | {f"t{i}" for i in range(300)}
        assert await store.usage("2026-12-02", "gemini") == 300
        assert (await store.get_turn("t7")).timings == {"first_audio_played": 12.5}  # type: ignore[union-attr]
