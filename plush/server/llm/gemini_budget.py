"""Admission control for Gemini's free tier: decide before each call whether Gemini may take the turn.

Per-minute request and token budgets use `limits` (moving windows; its storage can move to Redis for several
server replicas). The daily request count lives in the store, keyed by the Pacific date, because Google resets
free-tier quotas at midnight Pacific and a restart must not hand out a fresh day. A 429's RetryInfo pauses
Gemini for the delay it names; errors open the circuit breaker. Every refusal has a reason the router records.
Each client (a plush, a Telegram user) gets at most `client_share` of each budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from plush.config import GeminiConfig
from plush.server.llm.base import Prompt
from plush.server.llm.circuit_breaker import CircuitBreaker
from plush.server.store import Store

PACIFIC = ZoneInfo("America/Los_Angeles")
REQUESTS_KEY = "gemini:requests"


def pacific_day(now: datetime) -> str:
    """The free-tier day a moment belongs to (ISO date in America/Los_Angeles)."""
    return now.astimezone(PACIFIC).date().isoformat()


def estimate_tokens(prompt: Prompt, max_output_tokens: int) -> int:
    """A cautious estimate of what a call costs against the per-minute token budget: prompt plus the most output."""
    return prompt.approx_tokens() + max_output_tokens


_PROBE = Prompt(system="", history=(), user="")
"""The smallest prompt: what a question about "now" costs against the token budget (its output at most)."""


class GeminiBudget:
    """Budgets, Retry-After pause and circuit breaker in front of one Gemini API key."""

    def __init__(
        self,
        config: GeminiConfig,
        store: Store,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._store = store
        self._wall_clock = wall_clock
        self._clock = clock
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self.breaker = CircuitBreaker(
            failure_threshold=config.failures_to_open,
            base_backoff_s=config.backoff_s,
            max_backoff_s=config.max_backoff_s,
            clock=clock,
        )

    def _share(self, budget: int) -> int:
        return max(1, math.floor(budget * self.config.client_share))

    async def admit(self, client_id: str, prompt: Prompt) -> str | None:
        """Count the request and return None when Gemini may take it; otherwise the reason it may not."""
        async with self._lock:
            day = pacific_day(self._wall_clock())
            checks = self._minute_checks(client_id, prompt)
            if (refusal := await self._refusal(day, client_id, checks)) is not None:
                return refusal
            # Last: taking the half-open trial commits the router to report how the call went (or release it).
            if not self.breaker.allow():
                return "circuit_open"
            for amount, keys, cost, _ in checks:
                if amount:
                    await self._limiter.hit(RateLimitItemPerMinute(amount), *keys, cost=cost)
            await self._store.add_usage(day, REQUESTS_KEY)
            await self._store.add_usage(day, f"{REQUESTS_KEY}:{client_id}")
        return None

    async def refusal(self, client_id: str = "", prompt: Prompt | None = None) -> str | None:
        """Why Gemini would not take a request from `client_id` now, or None: the checks `admit` makes, nothing
        counted (for /status, which must name the brain a turn would really get)."""
        day = pacific_day(self._wall_clock())
        return await self._refusal(day, client_id, self._minute_checks(client_id, prompt or _PROBE))

    def _minute_checks(self, client_id: str, prompt: Prompt) -> list[tuple[int, tuple[str, ...], int, str]]:
        """(budget, limiter keys, cost, refusal reason) for each per-minute budget; a budget of 0 is no limit."""
        cfg = self.config
        tokens = estimate_tokens(prompt, cfg.max_output_tokens)
        return [
            (cfg.requests_per_minute, ("rpm",), 1, "minute_budget_spent"),
            (cfg.requests_per_minute and self._share(cfg.requests_per_minute), ("rpm", client_id), 1,
             "client_minute_budget_spent"),
            (cfg.tokens_per_minute, ("tpm",), tokens, "token_budget_spent"),
        ]  # fmt: skip

    async def _refusal(
        self, day: str, client_id: str, checks: list[tuple[int, tuple[str, ...], int, str]]
    ) -> str | None:
        """Why Gemini may not take a request now (nothing is counted here), or None."""
        cfg = self.config
        if self._clock() < self._paused_until:
            return "retry_after"
        if self.breaker.seconds_left() > 0:
            return "circuit_open"
        if cfg.requests_per_day:
            if await self._store.usage(day, REQUESTS_KEY) >= cfg.requests_per_day:
                return "daily_budget_spent"
            if await self._store.usage(day, f"{REQUESTS_KEY}:{client_id}") >= self._share(cfg.requests_per_day):
                return "client_daily_budget_spent"
        for amount, keys, cost, reason in checks:
            if amount and not await self._limiter.test(RateLimitItemPerMinute(amount), *keys, cost=cost):
                return reason
        return None

    async def requests_today(self) -> int:
        """Gemini requests counted so far in the current Pacific day."""
        return await self._store.usage(pacific_day(self._wall_clock()), REQUESTS_KEY)

    def pause(self, seconds: float) -> None:
        """Send no request for `seconds` (a 429's RetryInfo delay)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())
