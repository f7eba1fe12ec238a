"""Which plushes talk to this server: the address, client version and time of each one's calls, seen by a gRPC
interceptor, for the dashboard's device list and the `plush_connected_plushes` metric.

A plush opens a call per turn (and one for its offline phrase at start), so "online" means a call is open now or
one ended within `dashboard.online_window_s`. Only calls the token check let through are counted (the
interceptor runs after it), so a stranger cannot make a plush look online. With replicas on one Redis, the
other replicas' sightings come in as `elsewhere` (shared_presence.py) and are combined with this one's.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from plush.server.auth import PROTECTED_PREFIX, UNKNOWN_DEVICE, bearer

VERSION_KEY = "plush-version"
"""Metadata a client may send with its version; without it the gRPC user agent is shown."""


@dataclass
class Sighting:
    """What the server knows of one client from its calls since the server started."""

    device_id: str
    address: str = ""
    version: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    calls: int = 0
    open_calls: int = 0
    methods: dict[str, int] = field(default_factory=dict)

    def online(self, window_s: float, now: float | None = None) -> bool:
        """A call is open, or one ended less than `window_s` ago."""
        return self.open_calls > 0 or ((now or time.time()) - self.last_seen) < window_s

    def combined(self, other: Sighting) -> Sighting:
        """This device as two servers saw it together: calls added up, the latest address and version."""
        latest = other if other.last_seen > self.last_seen else self
        methods = dict(self.methods)
        for name, count in other.methods.items():
            methods[name] = methods.get(name, 0) + count
        return Sighting(
            self.device_id,
            address=latest.address or self.address or other.address,
            version=latest.version or self.version or other.version,
            first_seen=min((t for t in (self.first_seen, other.first_seen) if t), default=0.0),
            last_seen=max(self.last_seen, other.last_seen),
            calls=self.calls + other.calls,
            open_calls=self.open_calls + other.open_calls,
            methods=methods,
        )


class Presence:
    """Sightings by device id; `interceptor()` feeds it from the gRPC server."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, Sighting] = {}
        self.elsewhere: dict[str, Sighting] = {}
        """What the other live replicas saw (shared_presence.py keeps it fresh); empty with one server."""

    def sightings(self) -> list[Sighting]:
        """Every client seen since the server started (here or on a live replica), most recent first."""
        devices = self._seen.keys() | self.elsewhere.keys()
        seen = [s for s in map(self.get, devices) if s is not None]
        return sorted(seen, key=lambda s: s.last_seen, reverse=True)

    def own_sightings(self) -> list[Sighting]:
        """The clients this server saw itself."""
        return list(self._seen.values())

    def get(self, device_id: str) -> Sighting | None:
        here, there = self._seen.get(device_id), self.elsewhere.get(device_id)
        if here is None or there is None:
            return here or there
        return here.combined(there)

    def online_count(self, window_s: float) -> int:
        now = self._clock()
        return sum(1 for s in self.sightings() if s.online(window_s, now))

    def call_started(self, device_id: str, method: str, address: str, version: str) -> Sighting:
        now = self._clock()
        sighting = self._seen.setdefault(device_id, Sighting(device_id, first_seen=now))
        sighting.address, sighting.version = address or sighting.address, version or sighting.version
        sighting.last_seen = now
        sighting.calls += 1
        sighting.open_calls += 1
        name = method.rsplit("/", 1)[-1]
        sighting.methods[name] = sighting.methods.get(name, 0) + 1
        return sighting

    def call_ended(self, sighting: Sighting) -> None:
        sighting.open_calls = max(0, sighting.open_calls - 1)
        sighting.last_seen = self._clock()

    def interceptor(self) -> PresenceInterceptor:
        return PresenceInterceptor(self)


class PresenceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each Companion call's handler so its start and end are recorded with the caller's address."""

    def __init__(self, presence: Presence) -> None:
        self.presence = presence

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED_PREFIX):
            return handler
        metadata = details.invocation_metadata
        device = bearer(metadata)[0] or UNKNOWN_DEVICE
        version = _metadata_value(metadata, VERSION_KEY) or _metadata_value(metadata, "user-agent")
        return _observed(handler, self.presence, device, details.method, version)


def _metadata_value(metadata: Any, key: str) -> str:
    values = [v for k, v in metadata or () if k == key and isinstance(v, str)]
    return values[0][:120] if values else ""


def _observed(
    handler: grpc.RpcMethodHandler[Any, Any], presence: Presence, device: str, method: str, version: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that records the call around the original behaviour."""
    kind = (
        ("stream_stream" if handler.response_streaming else "stream_unary")
        if handler.request_streaming
        else ("unary_stream" if handler.response_streaming else "unary_unary")
    )
    behaviour: Callable[..., Any] = getattr(handler, kind)

    def begin(context: grpc.aio.ServicerContext[Any, Any]) -> Sighting:
        return presence.call_started(device, method, _address(context.peer()), version)

    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            sighting = begin(context)
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                presence.call_ended(sighting)

        wrapped: Callable[..., Any] = stream
    else:

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            sighting = begin(context)
            try:
                return await behaviour(request, context)
            finally:
                presence.call_ended(sighting)

        wrapped = call
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    handler_out: grpc.RpcMethodHandler[Any, Any] = factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return handler_out


def _address(peer: str) -> str:
    """`ipv4:192.168.1.20:53122` -> `192.168.1.20:53122` (gRPC's peer strings name the transport first)."""
    kind, sep, rest = peer.partition(":")
    return rest if sep and kind in ("ipv4", "ipv6", "unix") else peer
