"""Owners: what one plush is told never reaches another plush's prompt or reply; a household shares; old
databases keep their facts without leaking them.

The model here is the fake Gemini answering with the very message it was given (the memory note included), as a
small local model that reads its prompt back would: whatever reached a plush's prompt would be in its reply.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import StartServer
from fakes.gemini import FakeGemini, RecordedRequest, _Reply, _Script

from plush.config import MemoryConfig, load_config
from plush.device.client import CompanionClient
from plush.errors import PlushError
from plush.owners import Owners
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.app import RunningServer
from plush.server.memory import Memory
from plush.server.store import Store
from plush.server.store.sqlite import MIGRATIONS, OWNER_MIGRATION

SECRET = "ORANGE-MOON-77"
TELL = f"Remember that the dragon is called {SECRET}."
ASK = "What is the dragon called?"
TOKENS = "alpha=tok-alpha,beta=tok-beta,gamma=tok-gamma"
UNLIMITED = {"requests_per_day": 0, "requests_per_minute": 0}
Start = Callable[..., Awaitable[RunningServer]]


class EchoGemini(FakeGemini):
    """Answers every request with its last user message, so a reply shows everything the model was told."""

    def _record(self, request: RecordedRequest, *, consume: bool) -> _Script:
        super()._record(request, consume=consume)
        return _Reply((request.turns[-1][1],))


@pytest.fixture
def fake_gemini() -> Iterator[EchoGemini]:
    with EchoGemini() as fake:
        yield fake


@pytest.fixture
def start(start_gemini_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> Start:
    """Start a Gemini-backed server; `tokens` turns device tokens on (alpha, beta and gamma have one)."""

    async def start_with(
        *, tokens: bool = False, memory: dict[str, Any] | None = None, owners: dict[str, Any] | None = None
    ) -> RunningServer:
        if tokens:
            monkeypatch.setenv("PLUSH_DEVICE_TOKENS", TOKENS)
        server = await start_gemini_server(gemini=UNLIMITED, memory=memory or {}, owners=owners or {})
        return server  # type: ignore[no-any-return]

    return start_with


async def plush_says(server: RunningServer, device: str, text: str, *, tokens: bool, conversation: str = "") -> str:
    """One spoken turn of a plush (its transcript, as a plush with on-device STT sends it); returns the reply."""
    token = f"tok-{device}" if tokens else None
    async with CompanionClient(f"127.0.0.1:{server.port}", device, token=token) as client:
        call = await client.converse(pb.TurnStart(conversation_id=conversation, want_audio=False), transcript=text)
        events = [event async for event in call.events()]
    return "".join(event.text_delta.text for event in events)


@pytest.mark.parametrize("tokens", [False, True], ids=["tokens-off", "tokens-on"])
async def test_a_fact_told_to_one_plush_never_reaches_another_plushs_prompt_or_reply(
    start: Start, fake_gemini: EchoGemini, tokens: bool
) -> None:
    server = await start(tokens=tokens)
    await plush_says(server, "alpha", TELL, tokens=tokens)

    reply = await plush_says(server, "beta", ASK, tokens=tokens)
    assert SECRET not in reply
    assert SECRET.encode() not in fake_gemini.last_request.raw_body, "nothing of alpha's went to the model"
    prompt = await server.companion.prompt_for("device:beta", ASK, owner="device:beta")
    assert SECRET not in str(prompt.as_chat_messages())
    assert await server.companion.store.list_facts("device:beta") == []
    assert SECRET in await plush_says(server, "alpha", ASK, tokens=tokens), "alpha itself still knows it"


async def test_plushes_naming_the_same_conversation_do_not_see_each_others_turns(
    start: Start, fake_gemini: EchoGemini
) -> None:
    server = await start()  # without tokens a conversation's name is not bound to the plush that names it
    await plush_says(server, "alpha", "My secret word is pineapple.", tokens=False, conversation="nursery")
    reply = await plush_says(server, "beta", "What is the secret word?", tokens=False, conversation="nursery")
    assert "pineapple" not in reply
    examples = len(server.companion.persona.examples)
    assert fake_gemini.last_request.turns[examples:] == [("user", "What is the secret word?")], "its own window"


async def test_recall_from_every_conversation_stays_inside_the_owner(start: Start, fake_gemini: EchoGemini) -> None:
    server = await start(tokens=True, memory={"recall_scope": "all", "history_turns": 0})
    await plush_says(server, "alpha", "My secret word is pineapple.", tokens=True)
    assert "pineapple" not in await plush_says(server, "beta", "What is the secret word?", tokens=True)
    assert b"pineapple" not in fake_gemini.last_request.raw_body
    recalled = await plush_says(server, "alpha", "What is the secret word?", tokens=True, conversation="bedtime")
    assert "Owner said: My secret word is pineapple." in recalled, "alpha recalls it from its other conversation"


async def test_the_plushes_of_one_household_share_facts_and_recall(start: Start, fake_gemini: EchoGemini) -> None:
    server = await start(tokens=True, memory={"recall_scope": "all"}, owners={"home": {"devices": ["alpha", "beta"]}})
    await plush_says(server, "alpha", TELL, tokens=True)
    await plush_says(server, "alpha", "My secret word is pineapple.", tokens=True)

    shared = await plush_says(server, "beta", f"{ASK} And the secret word?", tokens=True)
    assert SECRET in shared and "Owner said: My secret word is pineapple." in shared
    stranger = await plush_says(server, "gamma", f"{ASK} And the secret word?", tokens=True)
    assert SECRET not in stranger and "pineapple" not in stranger, "gamma is in no household"
    facts = await server.companion.store.all_facts()
    assert [(f.text, f.owner) for f in facts] == [(f"the dragon is called {SECRET}", "home")]


async def test_an_old_database_keeps_its_facts_and_turns_but_no_plush_sees_anothers(tmp_path: Path) -> None:
    db = tmp_path / "plush.db"
    with closing(sqlite3.connect(db)) as conn:  # the schema just before owners, with what the testers left
        for number, script in enumerate(MIGRATIONS[: MIGRATIONS.index(OWNER_MIGRATION)], start=1):
            conn.executescript(f"{script}; PRAGMA user_version={number};")
        conn.executescript(
            f"""
            INSERT INTO facts (text, created_at, source) VALUES ('the dragon is called {SECRET}', 1, 'device:alpha');
            INSERT INTO facts (text, created_at, source) VALUES ('Mina likes rabbits', 2, 'cli');
            INSERT INTO turns (id, conversation_id, device_id, source, started_at, user_text, reply_text)
                VALUES ('t1', 'device:alpha', 'alpha', 'device', 3, 'My secret word is pineapple.', 'Lovely!');
            INSERT INTO conversations (id, created_at) VALUES ('device:alpha', 3);
            """
        )
    async with await Store.open(db) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        kept = await store.all_facts()
        assert [(f.id, f.source, f.owner) for f in kept] == [(1, "device:alpha", "legacy"), (2, "cli", "legacy")]
        memory = Memory(store, MemoryConfig(recall_scope="all"))
        beta = await memory.recollect("device:beta", "dragon, rabbits, secret word?", owner="device:beta")
        assert (beta.facts, beta.history, beta.recalled) == ((), (), ())
        alpha = await memory.recollect("device:alpha", "dragon, rabbits?", owner="device:alpha")
        assert alpha.facts == (), "an old fact reaches no plush until someone gives it an owner"
        assert [m.text for m in alpha.history] == ["My secret word is pineapple.", "Lovely!"], "its own turns stay"
        assert [(c.id, c.owner) for c in await store.list_conversations()] == [("device:alpha", "device:alpha")]

        mine = await store.add_fact(f"the dragon is called {SECRET}", "cli", owner="device:alpha")
        assert mine.id == 3, "ids go on after the old ones"
        merged = await store.move_fact(1, "device:alpha")
        assert merged == mine, "moving a fact its new owner already has keeps theirs"
        assert [(f.id, f.owner) for f in await store.all_facts()] == [(2, "legacy"), (3, "device:alpha")]


def test_memory_commands_keep_each_fact_with_its_owner(tmp_path: Path) -> None:
    config = tmp_path / "plush.toml"
    config.write_text(
        f"[server]\ndatabase = '{tmp_path / 'plush.db'}'\n"
        '[owners.home]\ndevices = ["alpha", "beta"]\n[owners.gran]\ndevices = ["gamma"]\n',
        encoding="utf-8",
    )

    def plush(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "plush", "memory", *args, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    unsaid = plush("remember", "Mina likes rabbits")
    assert unsaid.returncode == 1 and "whose fact is it?" in unsaid.stderr and "owners: gran, home" in unsaid.stderr
    member = plush("remember", "Mina likes rabbits", "--owner", "device:alpha")
    assert member.returncode == 1 and "belongs to the household 'home': use --owner home" in member.stderr
    assert "remembered fact 1 for home" in plush("remember", "Mina likes rabbits", "--owner", "home").stdout
    assert "remembered fact 2 for device:delta" in plush("remember", "Dad snores", "-o", "device:delta").stdout

    home = plush("facts", "--owner", "home").stdout
    assert "Mina likes rabbits" in home and "Dad snores" not in home
    assert "fact 2 now belongs to gran" in plush("move", "2", "--owner", "gran").stdout
    listed = plush("facts").stdout
    assert "Mina likes rabbits" in listed and "Dad snores" in listed and "gran" in listed


def test_each_device_is_its_own_owner_unless_a_household_claims_it() -> None:
    owners = Owners(load_config(search=False, owners={"home": {"devices": ["alpha"], "telegram_users": [42]}}).owners)
    assert owners.for_device("alpha") == "home"
    assert owners.for_device("beta") == "device:beta"
    assert (owners.for_telegram_user(42), owners.for_telegram_user(7)) == ("home", "telegram:7")
    assert owners.default() == "home"
    with pytest.raises(PlushError, match="there is no owner 'nobody'"):
        owners.check("nobody")
    with pytest.raises(PlushError, match="only keeps facts from before owners"):
        owners.check("legacy")


@pytest.mark.parametrize(
    ("owners", "message"),
    [
        ({"home": {"devices": ["alpha"]}, "gran": {"devices": ["alpha"]}}, "'alpha' is in two households"),
        ({"legacy": {"devices": ["alpha"]}}, "'legacy' is reserved"),
        ({"device:alpha": {}}, "may hold only letters, digits"),
    ],
)
def test_households_that_would_make_an_owner_unclear_are_config_errors(owners: dict[str, Any], message: str) -> None:
    with pytest.raises(PlushError, match=message):
        load_config(search=False, owners=owners)


def test_the_store_interface_never_imports_a_backend() -> None:
    import ast
    import inspect

    import plush.server.store.base as interface

    tree = ast.parse(inspect.getsource(interface))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.startswith("plush.server.store")} == {"plush.server.store.records"}
