"""Admission control for Gemini's free tier: decide before each call whether Gemini may take the turn.

Per-minute request and token budgets use `limits` (moving windows), in this process or, with `[server] redis`,
in Redis through `limits`' own Redis storage, so N replicas together stay within one key's free tier: the checks
and the counting then run under a Redis lock, or two replicas could both pass the last free slot. The daily
request count lives in the store, keyed by the Pacific date, because Google resets free-tier quotas at midnight
Pacific and a restart must not hand out a fresh day (replicas share it when they share the database). A 429's
RetryInfo pauses Gemini for the delay it names (every replica, with Redis: a key that expires with the pause);
errors open this process's circuit breaker. Every refusal has a reason the router records. Each client (a
plush, a Telegram user) gets at most `client_share` of each budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast
from zoneinfo import ZoneInfo

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from plush.config import GeminiConfig
from plush.logs import get_logger
from plush.server.llm.base import Prompt
from plush.server.llm.circuit_breaker import CircuitBreaker
from plush.server.store import Store

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)
PACIFIC = ZoneInfo("America/Los_Angeles")
REQUESTS_KEY = "gemini:requests"
ADMIT_LOCK_S = 10.0
"""The most one replica's admission may hold the shared lock (a dead holder's lock expires after it)."""


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
        shared: SharedState | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._wall_clock = wall_clock
        self._clock = clock
        self._shared = shared
        self._limiter = MovingWindowRateLimiter(_storage(shared))
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self._pausing: set[asyncio.Task[None]] = set()
        self.breaker = CircuitBreaker(
            failure_threshold=config.failures_to_open,
            base_backoff_s=config.backoff_s,
            max_backoff_s=config.max_backoff_s,
            clock=clock,
        )

    def _share(self, budget: int) -> int:
        return max(1, math.floor(budget * self.config.client_share))

    async def admit(self, client_id: str, prompt: Prompt, *, reserve: int = 0) -> str | None:
        """Count the request and return None when Gemini may take it; otherwise the reason it may not.

        `reserve`: requests like this one that must still fit after it, or it is refused (a speculative start,
        see plush/server/speculation.py, never takes what the owner's real turn will need).

        With Redis, one that cannot be reached (or a lock not had in time) refuses: "shared_state_unreachable",
        the local brain answers, and no replica spends beyond the budget it cannot see."""
        try:
            async with self._lock, self._replicas_lock():
                return await self._admit(client_id, prompt, reserve)
        except _shared_errors() as exc:
            log.warning("gemini_budget_unreachable", error=str(exc) or type(exc).__name__)
            return "shared_state_unreachable"

    def _replicas_lock(self) -> AbstractAsyncContextManager[object]:
        """Every replica's admissions one at a time (none with one server: `_lock` is enough)."""
        if self._shared is None:
            return nullcontext()
        # A lock per admission (its token is its own); sleep: how often a waiting replica retries, a few ms.
        lock = self._shared.client.lock(
            self._shared.key("gemini", "admit"),
            timeout=ADMIT_LOCK_S, sleep=0.005, blocking_timeout=ADMIT_LOCK_S, thread_local=False,
        )  # fmt: skip
        return cast("AbstractAsyncContextManager[object]", lock)

    async def _admit(self, client_id: str, prompt: Prompt, reserve: int) -> str | None:
        day = pacific_day(self._wall_clock())
        checks = self._minute_checks(client_id, prompt)
        if (refusal := await self._refusal(day, client_id, checks, reserve)) is not None:
            return refusal
        # Last: taking the half-open trial commits the router to report how the call went (or release it).
        if not self.breaker.allow():
            return "circuit_open"
        try:
            for amount, keys, cost, _ in checks:
                if amount:
                    await self._limiter.hit(RateLimitItemPerMinute(amount), *keys, cost=cost)
        except BaseException:
            self.breaker.release()  # no call follows: the trial goes to the next one
            raise
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
        self, day: str, client_id: str, checks: list[tuple[int, tuple[str, ...], int, str]], reserve: int = 0
    ) -> str | None:
        """Why Gemini may not take a request now (nothing is counted here), or None; with `reserve`, why it may not
        take this one and `reserve` more."""
        cfg = self.config
        if self._clock() < self._paused_until or await self._paused_elsewhere():
            return "retry_after"
        if self.breaker.seconds_left() > 0:
            return "circuit_open"
        if cfg.requests_per_day:
            if await self._store.usage(day, REQUESTS_KEY) + reserve >= cfg.requests_per_day:
                return "daily_budget_spent"
            if await self._store.usage(day, f"{REQUESTS_KEY}:{client_id}") + reserve >= self._share(
                cfg.requests_per_day
            ):
                return "client_daily_budget_spent"
        for amount, keys, cost, reason in checks:
            if amount and not await self._limiter.test(
                RateLimitItemPerMinute(amount), *keys, cost=cost * (1 + reserve)
            ):
                return reason
        return None

    async def requests_today(self) -> int:
        """Gemini requests counted so far in the current Pacific day."""
        return await self._store.usage(pacific_day(self._wall_clock()), REQUESTS_KEY)

    def pause(self, seconds: float) -> None:
        """Send no request for `seconds` (a 429's RetryInfo delay); with Redis, no replica does."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        if self._shared is not None and seconds > 0:
            task = asyncio.get_running_loop().create_task(self.share_pause(seconds))
            self._pausing.add(task)
            task.add_done_callback(self._pausing.discard)

    async def share_pause(self, seconds: float) -> None:
        """Tell every replica to wait `seconds` (`pause` does it in the background); nothing without Redis."""
        if self._shared is None:
            return
        key = self._shared.key("gemini", "paused")
        ms = math.ceil(seconds * 1000)
        try:
            # GT: a shorter pause never cuts a longer one another replica set (NX: made when it is not there).
            if not await self._shared.client.set(key, "1", px=ms, nx=True):
                await self._shared.client.pexpire(key, ms, gt=True)
        except _shared_errors() as exc:  # this replica still waits; the others learn it at their own 429
            log.warning("gemini_pause_not_shared", error=str(exc))

    async def _paused_elsewhere(self) -> bool:
        """Whether another replica was asked to wait (its pause is a key that expires with it)."""
        return self._shared is not None and bool(await self._shared.client.exists(self._shared.key("gemini", "paused")))

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())


def _storage(shared: SharedState | None) -> Storage:
    """Where the minute windows are counted: this process, or the replicas' Redis (on its one connection pool)."""
    if shared is None:
        return MemoryStorage()
    return RedisStorage(
        f"async+{shared.url}",
        implementation="redispy",
        key_prefix=shared.key("limits"),
        connection_pool=shared.client.connection_pool,  # type: ignore[arg-type]  # limits types options narrowly
    )


def _shared_errors() -> tuple[type[BaseException], ...]:
    """What an unreachable Redis (or a lock not had in time) raises; nothing without the redis extra."""
    try:
        from redis.exceptions import RedisError
    except ModuleNotFoundError:
        return ()
    return (RedisError, OSError)
