"""Ending a client-streaming call with a status the client can read.

grpc-python's asyncio client reports `INTERNAL: Internal error from Core` instead of the server's status when
one of its writes fails because the server already ended the call (grpc/grpc#36066). So a refusal first reads
what the client is still sending for this turn (up to TurnEnd or Cancel, for a bounded time), and only then
ends the call with its code and message. The service and the token check both refuse this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, NoReturn

import grpc

DRAIN_LIMIT_S = 2.0
"""The longest a refusal waits for the client to finish writing; a client still writing after that gets the
refusal anyway (and, from grpc-python's asyncio client, possibly the INTERNAL above)."""
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
) -> NoReturn:
    """End the call with `code` and `message`, draining `requests` first when the client may still be writing."""
    if requests is not None:
        await drain(requests)
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
