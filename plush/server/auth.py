"""Which clients may talk to the server: each plush (and chat client) shows its token as gRPC metadata
(`authorization: Bearer <token>`), checked against `PLUSH_DEVICE_TOKENS` and the paired plushes (`plush pair add`)
by a server interceptor before any Companion method runs. Health checks and reflection stay open, so monitoring
needs no token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from plush.logs import get_logger
from plush.pairing import same_secret
from plush.server.paired_plushes import PairedPlushes
from plush.server.refusals import refuse

log = get_logger(__name__)
DEVICE_ID_KEY = "plush-device-id"
PROTECTED_PREFIX = "/plush.v1.Companion/"
UNKNOWN_DEVICE = "unknown"
"""The device id of a call that names none, or more than one (`device_id`)."""


def bearer(metadata: Any) -> tuple[str, str]:
    """(device id, token) from a call's metadata ("" where absent). A call naming two device ids (or two
    tokens) gets "" for that field: it must never be checked as one plush and served as another."""
    devices = [v for k, v in metadata or () if k == DEVICE_ID_KEY and isinstance(v, str)]
    tokens = [
        v[len("Bearer ") :]
        for k, v in metadata or ()
        if k == "authorization" and isinstance(v, str) and v.startswith("Bearer ")
    ]
    return (devices[0][:64] if len(devices) == 1 else ""), (tokens[0] if len(tokens) == 1 else "")


def device_id(metadata: Any) -> str:
    """The calling plush's id, as the token check saw it (`UNKNOWN_DEVICE` when absent or ambiguous)."""
    return bearer(metadata)[0] or UNKNOWN_DEVICE


class DeviceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses Companion calls whose device id and token match neither `tokens` nor a paired plush
    (UNAUTHENTICATED)."""

    def __init__(self, tokens: dict[str, str], paired: PairedPlushes | None = None) -> None:
        self._tokens = tokens
        self._paired = paired

    def check(self, metadata: Any) -> str | None:
        """Why a call may not go on, or None."""
        device, token = bearer(metadata)
        expected = self._tokens.get(device)
        if not token:
            return (
                f"this server needs a device token: set PLUSH_DEVICE_TOKEN on the plush '{device or '?'}', or pair "
                "it (`plush pair add NAME` on the server, then `plush pair join CODE` on the plush)"
            )
        if expected is not None and same_secret(expected, token):
            return None
        if self._paired is not None and device and self._paired.accepts(device, token):
            return None
        return (
            f"the token of plush '{device or '?'}' is not accepted "
            "(see `plush pair list` and PLUSH_DEVICE_TOKENS on the server)"
        )

    async def recheck(self, metadata: Any) -> str | None:
        """`check`, after looking the plush up in the store when the paired plushes in memory refuse it: it may
        have been paired a moment ago, on another replica's machine."""
        problem = self.check(metadata)
        device, token = bearer(metadata)
        if problem is None or self._paired is None or not device or not token:
            return problem
        try:
            await self._paired.look_up(device)
        except Exception as exc:  # the database is away: the plushes already known still talk, this one waits
            log.warning("paired_plush_not_looked_up", device_id=device, error=str(exc) or type(exc).__name__)
            return problem
        return self.check(metadata)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED_PREFIX):
            return handler
        problem = await self.recheck(details.invocation_metadata)
        if problem is None:
            return handler
        log.warning("device_refused", method=details.method, reason=problem)
        return _refusal(handler, problem)


def _refusal(handler: grpc.RpcMethodHandler[Any, Any], message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED.

    A client-streaming call (Converse) is drained first, so the client reads this status rather than the
    INTERNAL its next write would get from grpc-python (see refusals.py).
    """
    streamed = handler.request_streaming

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await refuse(context, grpc.StatusCode.UNAUTHENTICATED, message, request if streamed else None)
        yield  # pragma: no cover - refuse raises; the yield makes this a streaming handler

    async def refuse_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse(context, grpc.StatusCode.UNAUTHENTICATED, message, request if streamed else None)

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_unary, **serializers)
    return grpc.unary_unary_rpc_method_handler(refuse_unary, **serializers)
