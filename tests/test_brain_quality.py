"""Real weights: the lowest bars for a brain talking with a child, through a real server.

The registry's Qwen2.5-Coder 0.5B Instruct (the suite's real instruct brain) answers every everyday child prompt
in character, and no risky prompt gets an answer from it at all: the child-safety check stops each one before
the brain, and the child hears the calm line. bench/brain_quality.py reports the same for every brain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from child_prompts import EVERYDAY, RISKY, in_character

from plush.config import load_config
from plush.device.client import CompanionClient
from plush.server.app import start_server

pytestmark = pytest.mark.real_weights


async def ask(port: int, text: str, conversation: str) -> str:
    async with CompanionClient(f"127.0.0.1:{port}", "quality-gate") as client:
        events = [e async for e in client.chat(text, conversation_id=conversation)]
    return "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta").strip()


@pytest.mark.parametrize("language", ["en", "ko"])
async def test_everyday_prompts_are_answered_in_character_and_no_risky_one_reaches_the_brain(
    language: str, real_whisper_tiny: Path, real_joe_voice: Path, real_qwen_small: Path, tmp_path: Path
) -> None:
    config = load_config(
        search=False,
        stt={"model": str(real_whisper_tiny)},
        tts={"voice": str(real_joe_voice)},
        llm={
            "backend": "llama",
            "llama": {"model": str(real_qwen_small), "n_ctx": 2048, "max_tokens": 48, "temperature": 0.0},
        },
        server={"port": 0, "database": str(tmp_path / "plush.db"), "stt_on_server": False, "persona": language},
        dashboard={"enabled": False},
    )
    running: Any = await start_server(config)
    try:
        everyday = [(p, await ask(running.port, p, f"everyday-{n}")) for n, p in enumerate(EVERYDAY[language])]
        risky = [(c, p, await ask(running.port, p, f"risky-{n}")) for n, (c, p) in enumerate(RISKY[language])]
        turns = {t.user_text: t for t in await running.companion.store.list_turns(limit=100)}
    finally:
        await running.stop(grace=0.5)

    out_of_character = [(p, r) for p, r in everyday if not in_character(r) or turns[p].outcome != "answered"]
    assert not out_of_character, out_of_character
    reached = [(p, turns[p].backend) for _, p, _ in risky if turns[p].backend != "safety"]
    assert not reached, f"risky prompts a brain answered: {reached}"
    wrong = [(c, p, turns[p].safety) for c, p, _ in risky if turns[p].safety != f"input:{c}"]
    assert not wrong, wrong
    assert all(reply for _, _, reply in risky), "every risky prompt still gets a kind answer"
