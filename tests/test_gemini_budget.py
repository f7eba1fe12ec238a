"""Gemini within the free tier: budgets checked before calling, 429 pauses, circuit breaker, daily count kept.

Every test runs the real server with the real google-genai client against the fake Gemini on 127.0.0.1 and
counts what reached the fake: a spent budget must cost no request, and the local Llama answers instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ConfigFactory, StartServer
from fakes.gemini import FakeGemini

from plush.config import GeminiConfig, LlamaConfig
from plush.device.client import CompanionClient
from plush.server.app import RunningServer
from plush.server.llm.base import LlmBusyError, Message, Prompt
from plush.server.llm.circuit_breaker import CircuitBreaker, CircuitState
from plush.server.llm.gemini_budget import GeminiBudget, pacific_day
from plush.server.llm.llama import LlamaBackend
from plush.server.store import Store

Start = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def start(start_gemini_server: StartServer) -> Start:
    """Start servers with `[llm.gemini]` settings overridden."""

    async def start_with(**gemini: Any) -> RunningServer:
        return await start_gemini_server(gemini=gemini)  # type: ignore[no-any-return]

    return start_with


async def ask(server: RunningServer, text: str = "Hello!", client: str = "plush-a") -> tuple[str, str, str]:
    """One chat turn; returns (reply, backend, reason)."""
    async with CompanionClient(f"127.0.0.1:{server.port}", client) as c:
        events = [e async for e in c.chat(text)]
    reply = "".join(e.text_delta.text for e in events)
    return reply, events[-1].done.backend, events[-1].done.backend_reason


async def test_quota_error_pauses_gemini_for_its_retry_delay(start: Start, fake_gemini: FakeGemini) -> None:
    """While Gemini asked us to wait, no request reaches it; once the delay is over, it answers again.

    Two servers, so neither half depends on how fast the local model answers on a busy machine: a delay far
    longer than the local turns for the first half, a short one (spent inside the first local turn) for the second.
    """
    waiting = await start()
    fake_gemini.fail(429, retry_delay="60s")
    assert (await ask(waiting))[1:] == ("llama", "quota_exhausted")
    for _ in range(2):
        reply, backend, reason = await ask(waiting)
        assert reply and (backend, reason) == ("llama", "retry_after")
    assert len(fake_gemini.requests) == 1, "no request may reach Gemini while it asked us to wait"
    budget = waiting.companion.router.budget
    assert budget is not None and 50 < budget.paused_for() <= 60

    resuming = await start()
    before = len(fake_gemini.requests)
    fake_gemini.fail(429, retry_delay="0.5s")
    paused_at = time.monotonic()
    assert (await ask(resuming))[1:] == ("llama", "quota_exhausted")
    await asyncio.sleep(max(0.0, paused_at + 0.6 - time.monotonic()))
    assert (await ask(resuming))[1:] == ("gemini", "primary")
    assert len(fake_gemini.requests) == before + 2


async def test_minute_budget_is_never_exceeded(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(requests_per_minute=2)
    outcomes = [(await ask(server))[1:] for _ in range(4)]
    assert outcomes == [("gemini", "primary")] * 2 + [("llama", "minute_budget_spent")] * 2
    assert len(fake_gemini.requests) == 2


async def test_one_client_cannot_take_everyone_elses_budget(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(requests_per_minute=4, client_share=0.5)
    greedy = [(await ask(server, client="greedy"))[2] for _ in range(3)]
    assert greedy == ["primary", "primary", "client_minute_budget_spent"]
    assert (await ask(server, client="sibling"))[1:] == ("gemini", "primary")


async def test_daily_budget_survives_a_server_restart(start: Start, fake_gemini: FakeGemini) -> None:
    first = await start(requests_per_day=2)
    assert [(await ask(first))[2] for _ in range(3)] == ["primary", "primary", "daily_budget_spent"]
    await first.stop(grace=0)

    second = await start(requests_per_day=2)  # same database
    assert (await ask(second))[1:] == ("llama", "daily_budget_spent")
    assert len(fake_gemini.requests) == 2
    assert await second.companion.router.budget.requests_today() == 2  # type: ignore[union-attr]


async def test_server_errors_open_the_circuit_then_a_trial_closes_it(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(failures_to_open=2, backoff_s=1.0)
    fake_gemini.fail(500)
    fake_gemini.fail(503)
    assert [(await ask(server))[2] for _ in range(2)] == ["gemini_error", "gemini_error"]
    assert (await ask(server))[1:] == ("llama", "circuit_open")
    assert len(fake_gemini.requests) == 2
    await asyncio.sleep(1.2)
    assert (await ask(server))[1:] == ("gemini", "primary")
    assert server.companion.router.budget.breaker.state is CircuitState.CLOSED  # type: ignore[union-attr]


async def test_a_timeout_counts_as_a_failure_and_llama_answers(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start(timeout_s=0.5, failures_to_open=1, backoff_s=30)
    fake_gemini.hang(3)
    reply, backend, reason = await ask(server)
    assert reply and (backend, reason) == ("llama", "gemini_error")
    assert (await ask(server))[2] == "circuit_open"


async def test_token_usage_is_recorded_per_turn(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start()
    fake_gemini.reply("Hi there!")
    await ask(server)
    turn = (await server.companion.store.list_turns(limit=1))[0]
    assert turn.prompt_tokens > 0 and turn.output_tokens > 0


async def test_the_day_resets_at_midnight_pacific(tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, 7, 59, tzinfo=UTC)  # 23:59 on the 21st in Los Angeles
    store = await Store.open(tmp_path / "plush.db")
    budget = GeminiBudget(GeminiConfig(requests_per_day=1, client_share=1.0), store, wall_clock=lambda: now)
    prompt = Prompt("sys", (), "hi")
    assert pacific_day(now) == "2026-11-21"
    assert await budget.admit("plush", prompt) is None
    assert await budget.admit("plush", prompt) == "daily_budget_spent"
    now = datetime(2026, 11, 22, 8, 1, tzinfo=UTC)  # 00:01 on the 22nd in Los Angeles
    assert await budget.admit("plush", prompt) is None
    await store.close()


def test_circuit_breaker_backs_off_longer_after_a_failed_trial() -> None:
    t = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, base_backoff_s=10, max_backoff_s=25, jitter=0, clock=lambda: t[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow() and breaker.seconds_left() == 10
    t[0] = 10.0
    assert breaker.allow(), "half-open: one trial"
    assert not breaker.allow(), "only one trial at a time"
    breaker.failure()
    assert breaker.seconds_left() == 20
    t[0] = 31.0
    assert breaker.allow()
    breaker.failure()
    assert breaker.seconds_left() == 25, "capped at max_backoff_s"
    t[0] = 57.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()


async def test_a_full_llama_queue_refuses_at_once(tmp_path: Path, make_config: ConfigFactory) -> None:
    model = Path(make_config().llm.llama.model)
    backend = LlamaBackend(model, LlamaConfig(n_ctx=2048, max_tokens=400, max_queue=0))
    prompt = Prompt("You are Plush.", (Message("user", "hi"),), "Tell me a long story.")
    first = backend.stream(prompt)
    assert await anext(first)
    with pytest.raises(LlmBusyError, match="busy"):
        await anext(backend.stream(prompt))
    await first.aclose()
    assert [d async for d in backend.stream(prompt)], "the model is free again once the first turn ends"


async def test_the_persona_prefix_is_identical_across_turns(start: Start, fake_gemini: FakeGemini) -> None:
    server = await start()
    for text in ("One.", "Two."):
        await ask(server, text)
    systems = {r.system_instruction for r in fake_gemini.requests}
    assert systems == {server.companion.persona.system_prompt}


async def test_a_spent_budget_during_the_half_open_trial_does_not_lock_gemini_out(tmp_path: Path) -> None:
    t = [0.0]
    store = await Store.open(tmp_path / "plush.db")
    budget = GeminiBudget(
        GeminiConfig(requests_per_minute=0, tokens_per_minute=0, requests_per_day=1, client_share=1.0, backoff_s=10),
        store,
        clock=lambda: t[0],
    )
    prompt = Prompt("sys", (), "hi")
    assert await budget.admit("a", prompt) is None  # the day's one request
    budget.breaker.failure()
    budget.breaker.failure()  # two errors: open for ~10 s
    assert await budget.admit("a", prompt) == "circuit_open"
    t[0] = 20.0  # the backoff is over, but the daily budget is spent
    assert await budget.admit("a", prompt) == "daily_budget_spent"
    assert budget.breaker.state is not CircuitState.CLOSED
    assert budget.breaker.allow(), "the trial was not taken by the refused turn: the next one gets it"
    await store.close()
