"""The local brain neither crawls nor hangs under load: OpenMP's threads sleep, and a stalled worker is restarted.

bench/cluster.py had three turns reach the real Qwen2.5 0.5B at once on two busy cores; none gave a token in 60 s
while the model's queue refused every other turn as busy. The worker's OpenMP threads spun between tokens on the
cores the work needed. The stall tests stop the real worker with SIGSTOP right after its first delta
(`PLUSH_LLM_WORKER_CRASH`): a process alive that gives no token, the case a watchdog is for.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ConfigFactory

from plush.config import LlamaConfig
from plush.device.client import CompanionClient
from plush.server.app import start_server
from plush.server.llm.base import LlmCrashedError, Message, Prompt
from plush.server.llm.llama_process import LlamaProcess
from plush.server.llm.llama_worker import CRASH_ENV
from plush.server.persona import load_persona

STUCK = "STUCK"
SYSTEM = "You are Momo, a kind plush companion."
BOUND_S = 30.0
"""What a turn on the tiny model may take here, a stalled one included (its stall_s is 1.5 s)."""


async def reply(brain: LlamaProcess, text: str, system: str = SYSTEM, history: tuple[Message, ...] = ()) -> str:
    return "".join([d async for d in brain.stream(Prompt(system, history, text, speaker="Momo"))])


@pytest.fixture
async def stalling_server(make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A real server whose local brain stops (SIGSTOP, alive) after its first delta whenever a message holds STUCK."""
    monkeypatch.setenv(CRASH_ENV, f"{STUCK}=SIGSTOP")
    config = make_config()
    llama = config.llm.llama.model_dump() | {"max_tokens": 200, "restart_backoff_s": 0.05, "stall_s": 1.5}
    server = await start_server(make_config(llm={"backend": "llama", "llama": llama}))
    yield server
    await server.stop(grace=0)


async def test_a_worker_that_stops_giving_tokens_is_restarted_and_the_turn_gets_the_fallback_line(
    stalling_server: Any,
) -> None:
    server = stalling_server
    brain = server.companion.router.fallback
    assert isinstance(brain, LlamaProcess)
    first_pid = brain.pid

    async def chat(text: str) -> tuple[str, Any]:
        async with CompanionClient(f"127.0.0.1:{server.port}", "stall-test") as client:
            events = [e async for e in client.chat(text, conversation_id="room")]
        return "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta"), events[-1].done

    _, done = await asyncio.wait_for(chat(f"Tell me a long story {STUCK}"), BOUND_S)
    assert done.backend_reason == "local_llm_stalled"
    stored = (await server.companion.store.list_turns(limit=1))[0]
    assert (stored.outcome, stored.backend_reason) == ("error", "local_llm_stalled")
    assert "no token for 1.5 s" in stored.error

    text, done = await asyncio.wait_for(chat("Hello again!"), BOUND_S)
    assert text.strip() and done.backend == "llama", "the restarted worker answers"
    assert brain.pid is not None and brain.pid != first_pid
    assert "local_llm_stalled" in server.companion.router.description


async def test_a_turn_queued_behind_a_cancelled_stuck_one_is_answered_by_the_restarted_worker(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner gave up on the stuck turn (cancelled: no one waits on it any more); the worker is still timed."""
    monkeypatch.setenv(CRASH_ENV, f"{STUCK}=SIGSTOP")
    brain = LlamaProcess(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=40, temperature=0.0, stall_s=1.5))
    await brain.start(SYSTEM)
    try:
        stuck = brain.stream(Prompt(SYSTEM, (), f"Go on {STUCK}"))
        await anext(stuck)  # its first delta: the worker stops right after it
        queued = asyncio.create_task(reply(brain, "Hi!"))
        await stuck.aclose()  # the stuck turn is cancelled; the queued one waits behind it in the worker
        assert (await asyncio.wait_for(queued, BOUND_S)).strip(), "the queued turn is answered, not held"
        assert brain.crashes == 1 and brain.last_crash.startswith("local_llm_stalled")
    finally:
        await brain.aclose()


async def test_a_stalled_turn_that_is_answering_gets_the_stall_as_its_error(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, f"{STUCK}=SIGSTOP")
    brain = LlamaProcess(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=40, temperature=0.0, stall_s=1.5))
    await brain.start(SYSTEM)
    try:
        with pytest.raises(LlmCrashedError) as caught:
            await asyncio.wait_for(reply(brain, f"Go on {STUCK}"), BOUND_S)
        assert caught.value.reason == "local_llm_stalled"
    finally:
        await brain.aclose()


async def test_the_worker_runs_openmp_threads_that_sleep_between_tokens(
    models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    brain = LlamaProcess(models.gguf, LlamaConfig(n_ctx=256, max_tokens=4))
    await brain.start("")
    try:
        environ = await asyncio.to_thread(Path(f"/proc/{brain.pid}/environ").read_bytes)
        assert b"OMP_WAIT_POLICY=PASSIVE\0" in environ
    finally:
        await brain.aclose()


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two processes that keep two cores busy, as the server's own speech synthesis and recognition do."""
    spin = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


async def test_three_turns_at_once_on_busy_cores_are_answered_by_the_real_qwen(
    real_qwen_small: Path, busy_cores: None
) -> None:
    """The benchmark's case, small: three owners' turns (each with its own history) on two busy cores.

    Each prompt is read afresh but for the persona (the histories differ, as the plushes' do). With OpenMP's
    threads spinning (before OMP_WAIT_POLICY=PASSIVE), the first of the three was answered after 72 s on this
    project's 2-core machine; sleeping, all three in 21 s.
    """
    persona = load_persona("en")
    config = LlamaConfig(n_ctx=2048, max_tokens=16, temperature=0.0, n_threads=2, stall_s=120)
    brain = LlamaProcess(real_qwen_small, config)
    await brain.start(persona.system_prompt)
    try:

        def history(owner: int) -> tuple[Message, ...]:
            said = f"I am owner {owner}. I like the stars and the moon, tell me more about them please."
            return tuple(Message("user" if k % 2 == 0 else "assistant", f"{k}: {said}") for k in range(4))

        started = time.monotonic()
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(reply(brain, "What is your favourite colour?", persona.system_prompt, history(i)) for i in range(3))
            ),
            45,
        )
        assert all(r.strip() for r in replies), replies
        assert brain.crashes == 0, f"answered in {time.monotonic() - started:.0f} s, and no worker was killed"
    finally:
        await brain.aclose()
