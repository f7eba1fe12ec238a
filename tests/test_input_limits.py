"""One limit for every text that reaches the brain, and a window of past turns held to its token budget, so no
stored turn can break the turns after it. Real server on 127.0.0.1 with the tiny local model (2,048 tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import chat_reply

from plush.config import MemoryConfig
from plush.server.contract_limits import LIMITS, MAX_INPUT_CHARS
from plush.server.llm.base import approx_tokens
from plush.server.memory import Memory
from plush.server.store import Store, TurnRecord

GIANT = "purple elephants dance " * 5000
"""115,000 characters, about 38,000 tokens: far past the local model's context."""


def test_every_text_the_brain_reads_shares_one_limit() -> None:
    assert LIMITS["ChatRequest.text"] == LIMITS["Transcript.text"] == MAX_INPUT_CHARS


async def test_a_giant_stored_turn_never_breaks_the_turns_after_it(running_server: Any) -> None:
    await chat_reply(running_server.port, "hello there", "room")
    store = running_server.companion.store
    first = (await store.list_turns(1))[0]
    giant = TurnRecord(
        id="giantturn", conversation_id=first.conversation_id, device_id=first.device_id, source="telegram",
        user_text=GIANT, reply_text="What a lot of elephants!", owner=first.owner,
    )  # fmt: skip
    await store.add_turn(giant)  # as a turn stored before every face had the limit
    for text in ("tell me a story", "and another one"):
        reply, done = await chat_reply(running_server.port, text, "room")
        stored = await store.get_turn(done.turn_id)
        assert done.backend == "llama", stored.error
        assert stored.outcome == "answered" and not stored.error
        assert reply.strip()


async def test_the_window_keeps_the_newest_turns_that_fit_its_budget(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        turns = ["an old turn", GIANT, "a newer turn", "the newest turn"]
        for n, text in enumerate(turns):
            record = TurnRecord(f"t{n}", "room", "bear", "device", text, reply_text="ok", started_at=1000.0 + n)
            await store.add_turn(record)
        memory = Memory(store, MemoryConfig(history_turns=6, max_tokens=100, recall_turns=0))
        prompt, _ = await memory.prompt("system", "room", "x" * 50_000, owner="device:bear")
        said = [m.text for m in prompt.history if m.role == "user"]
        assert said == ["a newer turn", "the newest turn"]  # the giant ends the window; the old one is behind it
        assert sum(approx_tokens(m.text) for m in prompt.history) <= 100
        assert len(prompt.user) == MAX_INPUT_CHARS  # the last guard: no face can hand the model more
