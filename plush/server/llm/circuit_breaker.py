"""A circuit breaker for a flaky remote backend: stop calling it for a while after it fails, then try once.

Closed: calls go through; `failure_threshold` failures in a row open it. Open: calls are refused for the current
backoff (doubling from `base_backoff_s` up to `max_backoff_s`, with a little jitter so many servers do not retry
in step). Half-open: one trial call goes through; success closes the circuit and resets the backoff, failure
opens it again for longer. The router asks `allow()` before each Gemini call, so an outage costs no requests.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one backend and decides whether the next call may go through."""

    def __init__(
        self,
        *,
        failure_threshold: int = 2,
        base_backoff_s: float = 10.0,
        max_backoff_s: float = 300.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self._clock = clock
        self._failures = 0
        self._opened = 0
        self._open_until = 0.0
        self._state = CircuitState.CLOSED

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
            return CircuitState.HALF_OPEN
        return self._state

    def seconds_left(self) -> float:
        """How long the circuit stays open (0 when calls may go through)."""
        return max(0.0, self._open_until - self._clock()) if self._state is CircuitState.OPEN else 0.0

    def allow(self) -> bool:
        """Whether a call may go through now; in half-open state only the first caller gets the trial."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and self._state is CircuitState.OPEN:
            self._state = CircuitState.HALF_OPEN
            return True
        return False

    def release(self) -> None:
        """A call ended without a verdict (cancelled): let the next caller have the half-open trial."""
        if self._state is CircuitState.HALF_OPEN:
            self._state = CircuitState.OPEN
            self._open_until = self._clock()

    def success(self) -> None:
        self._failures = 0
        self._opened = 0
        self._state = CircuitState.CLOSED

    def failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            backoff = min(self.max_backoff_s, self.base_backoff_s * 2**self._opened)
            backoff *= 1 + random.uniform(0, self.jitter)
            self._opened += 1
            self._open_until = self._clock() + backoff
            self._state = CircuitState.OPEN
