"""Ending a client-streaming call with a status the client can read.

grpc-python's asyncio client reports `INTERNAL: Internal error from Core` instead of the server's status when
one of its writes fails because the server already ended the call (grpc/grpc#36066; the fix, grpc/grpc#43486,
is not released). So a refusal first reads what the client is still sending for this turn (up to TurnEnd or
Cancel, for a bounded time), and only then ends the call with its code and message. The service and the token
check both refuse this way.

How long to wait is the caller's choice. A plush refused for load at its first audio chunk goes on streaming
until its owner lets go of the button, so the service waits as long as the turn itself may last
(`server.max_audio_seconds` + `server.idle_timeout_s` from TurnStart, as `TurnRequests` reads it): a shorter
wait ended the call mid-question, and under load (32 plushes) some of them read INTERNAL. A stranger without a
token, and a turn stopped at shutdown, get `DRAIN_LIMIT_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, NoReturn

import grpc

DRAIN_LIMIT_S = 2.0
"""How long a refusal waits by default for the client to finish writing; a client still writing after that gets
the refusal anyway (and, from grpc-python's asyncio client, possibly the INTERNAL above)."""
_LAST_KINDS = ("end", "cancel")


async def drain(requests: AsyncIterator[Any], limit_s: float = DRAIN_LIMIT_S) -> None:
    """Read and drop what the client still sends for this turn: up to TurnEnd/Cancel, its half-close, or `limit_s`."""
    with suppress(TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError):
        async with asyncio.timeout(limit_s):
            async for request in requests:
                which = getattr(request, "WhichOneof", None)
                if which is not None and which("kind") in _LAST_KINDS:
                    return


async def refuse(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    requests: AsyncIterator[Any] | None = None,
    *,
    drain_s: float = DRAIN_LIMIT_S,
) -> NoReturn:
    """End the call with `code` and `message`, draining `requests` (for up to `drain_s`) first when the client may
    still be writing."""
    if requests is not None:
        await drain(requests, drain_s)
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
