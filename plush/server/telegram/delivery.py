"""Calls to the Bot API that survive Telegram's flood control and brief outages without doubling a message.

A 429 (`RetryAfter`) or a 5xx means Telegram did not take the request, so sending it again cannot double it.
A timeout is different: the message may have arrived, so it is never retried (a lost line beats a doubled one).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram.error import NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.warnings import PTBDeprecationWarning

from plush.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
MAX_WAIT_S = 60.0
"""The longest flood-control wait honoured; a longer one gives up on this message instead of stalling the chat."""
SERVER_ERROR_BACKOFF_S = 0.5


async def deliver(call: Callable[[], Awaitable[T]], *, what: str, attempts: int = 4) -> T:
    """`call()`, tried again after a 429 (waiting `retry_after`) or a server error (with backoff)."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryAfter as exc:
            wait = _retry_after_s(exc)
            if attempt == attempts or wait > MAX_WAIT_S:
                raise
            log.warning("telegram_flood_control", call=what, retry_after_s=wait, attempt=attempt)
        except TimedOut:
            raise
        except NetworkError as exc:  # 5xx and refused connections: Telegram did not take the request
            if attempt == attempts:
                raise
            wait = SERVER_ERROR_BACKOFF_S * 2 ** (attempt - 1)
            log.warning("telegram_unavailable", call=what, error=str(exc), attempt=attempt)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def best_effort(call: Callable[[], Awaitable[T]], *, what: str) -> T | None:
    """`deliver(call)` for a side call (typing, an edit mid-reply, a "slow down"): when Telegram refuses it at
    every try, that is logged and None returned, and the message it was for is still answered."""
    try:
        return await deliver(call, what=what)
    except TelegramError as exc:
        log.warning("telegram_side_call_failed", call=what, error=str(exc))
        return None


def _retry_after_s(exc: RetryAfter) -> float:
    """The wait Telegram asked for."""
    return seconds_of(exc, "retry_after")


def seconds_of(obj: object, attribute: str) -> float:
    """A duration field (`retry_after`, a voice note's `duration`) in seconds (0 when absent), whether
    python-telegram-bot gives it as a number or, opted in (PTB_TIMEDELTA), as a timedelta."""
    with warnings.catch_warnings():  # reading it as a number warns of the coming timedelta; both are handled
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = getattr(obj, attribute, None)
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
