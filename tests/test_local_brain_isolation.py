"""A crash inside llama.cpp costs one turn, never the server: the local brain runs in a supervised worker process.

The worker is the real one (`python -m plush.server.llm.llama_worker` on the tiny GGUF). `PLUSH_LLM_WORKER_CRASH`
makes it kill itself with a real signal right after its first delta, or at every start, as a native crash would.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import ConfigFactory

from plush.config import LlamaConfig
from plush.device.client import CompanionClient
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.app import start_server
from plush.server.llm.base import LlmCrashedError, LlmError, Prompt
from plush.server.llm.llama_process import LlamaProcess
from plush.server.llm.llama_worker import CRASH_ENV, WARM_UP_MARKER

BOOM = "BOOM"
SYSTEM = "You are Momo, a kind plush companion."


async def chat(port: int, text: str) -> tuple[str, pb.TurnDone]:
    async with CompanionClient(f"127.0.0.1:{port}", "crash-test") as client:
        events = [e async for e in client.chat(text, conversation_id="room")]
    reply = "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")
    return reply, events[-1].done


@pytest.fixture
async def crashing_server(make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A real server whose local brain is killed by `signal` whenever a message holds BOOM."""
    running: list[Any] = []

    async def start(sig: str = "SIGSEGV", marker: str = BOOM, **llama: Any) -> Any:
        monkeypatch.setenv(CRASH_ENV, f"{marker}={sig}")
        config = make_config()
        settings = config.llm.llama.model_dump() | {"max_tokens": 200, "restart_backoff_s": 0.05, **llama}
        server = await start_server(make_config(llm={"backend": "llama", "llama": settings}))
        running.append(server)
        return server

    yield start
    for server in running:
        await server.stop(grace=0)


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGKILL"])
async def test_a_worker_killed_mid_reply_costs_that_turn_and_the_next_is_answered(
    crashing_server: Any, sig: str
) -> None:
    server = await crashing_server(sig)
    brain = server.companion.router.fallback
    assert isinstance(brain, LlamaProcess)
    first_pid = brain.pid
    fallback = server.companion.persona.spec.fallback_line

    reply, done = await chat(server.port, f"Tell me a long story {BOOM}")
    assert done.backend_reason == "local_llm_crashed"
    assert reply.endswith(fallback) or (reply and reply.rstrip()[-1] in ".!?"), "the cut reply trails off in persona"
    stored = (await server.companion.store.list_turns(limit=1))[0]
    assert stored.outcome == "error"
    assert stored.backend_reason == "local_llm_crashed"
    assert f"signal={sig}" in stored.error

    reply, done = await chat(server.port, "Hello again!")
    assert reply.strip() and fallback not in reply
    assert done.backend == "llama"
    assert brain.pid is not None and brain.pid != first_pid, "a new worker answered"
    stored = (await server.companion.store.list_turns(limit=1))[0]
    assert stored.outcome == "answered"
    assert "crashed 1 time" in server.companion.router.description


async def test_crashes_in_a_row_open_the_breaker_and_it_is_said_once(
    crashing_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await crashing_server(crashes_before_pause=2, pause_s=60)
    fallback = server.companion.persona.spec.fallback_line
    for _ in range(2):
        _, done = await chat(server.port, f"Again {BOOM}")
        assert done.backend_reason == "local_llm_crashed"
    for _ in range(2):  # no worker is started for these: the fallback line at once
        reply, done = await chat(server.port, "Are you there?")
        assert (reply, done.backend, done.backend_reason) == (fallback, "fallback_line", "local_llm_down")
    stored = (await server.companion.store.list_turns(limit=1))[0]
    assert (stored.outcome, stored.backend_reason) == ("error", "local_llm_down")
    description = server.companion.router.description
    assert "local brain down: local_llm_crashed signal=SIGSEGV (2 crashes in a row)" in description
    assert (await server.companion.router.now()).reason == "local_llm_down"  # Telegram's /status
    assert server.dashboard is not None
    assert "local brain down" in server.dashboard.state.status()["brain"], "the dashboard's header says so"
    logged = capsys.readouterr()
    assert (logged.out + logged.err).count("local_llm_breaker_open") == 1


async def test_a_brain_that_crashes_at_every_start_leaves_the_server_serving_and_says_why(
    crashing_server: Any,
) -> None:
    server = await crashing_server(marker=WARM_UP_MARKER, crashes_before_pause=2, pause_s=60)
    fallback = server.companion.persona.spec.fallback_line
    reply, done = await chat(server.port, "Hello?")  # waits out the restart, which crashes too: breaker open
    assert (reply, done.backend_reason) == (fallback, "local_llm_down")
    async with CompanionClient(f"127.0.0.1:{server.port}", "doctor") as client:
        phrases = await client.phrases()
    assert "local brain down: local_llm_crashed signal=SIGSEGV (while loading" in phrases.brain


async def test_a_turn_queued_behind_the_crash_is_answered_by_the_restarted_worker(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, f"{BOOM}=SIGSEGV")
    brain = LlamaProcess(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=40, temperature=0.0, max_queue=1))
    await brain.start(SYSTEM)
    try:

        async def reply(text: str) -> str:
            return "".join([d async for d in brain.stream(Prompt(SYSTEM, (), text))])

        crashed, queued = await asyncio.gather(reply(f"Crash {BOOM}"), reply("Hi!"), return_exceptions=True)
        assert isinstance(crashed, LlmCrashedError) and crashed.reason == "local_llm_crashed"
        assert isinstance(queued, str) and queued.strip(), "the queued turn is answered, not lost"
        assert brain.crashes == 1 and brain.state == "ready"
    finally:
        await brain.aclose()


async def test_a_stopped_worker_leaves_no_process_behind(models: Any) -> None:
    brain = LlamaProcess(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=4))
    await brain.start(SYSTEM)
    pid = brain.pid
    assert pid is not None
    await brain.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(LlmCrashedError):
        [d async for d in brain.stream(Prompt(SYSTEM, (), "Hi"))]


async def test_an_unreadable_model_stops_the_start_with_why(models: Any, tmp_path: Any) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    brain = LlamaProcess(bad, LlamaConfig())
    with pytest.raises(LlmError, match="cannot load the GGUF model"):
        await brain.start(SYSTEM)
    assert brain.crashes == 0
