"""Logins: server-side sessions behind an HttpOnly, SameSite=Strict cookie, a CSRF token per session, and
failed logins slowed down per client address.

Sessions live in this process (a restart logs everyone out) or, with `[server] redis`, in Redis: then a login
made on one replica is valid on every other, survives a restart, and logging out ends it everywhere. Redis keeps
each session under a hash of its id (a copy of the Redis data holds no cookie) and lets it expire with the
session. The cookie carries nothing but a random id, so logging out really ends a session. A session also ends
when the password changes (`plush dashboard set-password` on a running server): each one remembers the password
it was opened with, as `stamp` says it. Every state-changing request must echo the session's CSRF token (a form
field or the `X-CSRF-Token` header): the synchronizer-token pattern, checked in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plush.pairing import same_secret

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

COOKIE = "plush_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_LOGIN_DELAY_S = 30.0
FAILURE_MEMORY_S = 900.0
"""Failed logins older than this are forgotten: the delay starts small again."""
SWEEP_EVERY_S = 60.0
"""How often (at most, as failures come in) the throttle looks for addresses to forget."""


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    expires: float
    password: str = ""
    """The password's stamp when the session opened: another stamp now means the password changed."""


class Sessions:
    """Open sessions by id; expired ones, and those opened under another password, are dropped when looked up.

    `stamp` says which password is current (any string that changes when it does; see `Passwords.stamp`);
    `shared` keeps them in the replicas' Redis instead of this process."""

    def __init__(
        self,
        lifetime_s: float,
        clock: Callable[[], float] = time.time,
        stamp: Callable[[], str] = lambda: "",
        shared: SharedState | None = None,
    ) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._stamp = stamp
        self._shared = shared
        self._open: dict[str, Session] = {}

    async def create(self) -> Session:
        now = self._clock()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now + self.lifetime_s, self._stamp()
        )
        if self._shared is not None:
            fields = {"csrf": session.csrf, "created": now, "expires": session.expires, "password": session.password}
            await self._shared.client.set(self._key(session.id), json.dumps(fields), px=_ms(self.lifetime_s))
            return session
        self._open[session.id] = session
        self._drop_expired(now)
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The open session `session_id` names, or None (never opened, logged out, expired, password changed)."""
        if not session_id:
            return None
        session = await self._load(session_id)
        if session is None or session.expires <= self._clock() or session.password != self._stamp():
            await self.end(session_id)
            return None
        return session

    def seconds_left(self, session: Session) -> float:
        """How long `session` has before it expires (0 once it has)."""
        return max(0.0, session.expires - self._clock())

    async def end(self, session_id: str | None) -> None:
        if not session_id:
            return
        self._open.pop(session_id, None)
        if self._shared is not None:
            await self._shared.client.delete(self._key(session_id))

    async def _load(self, session_id: str) -> Session | None:
        if self._shared is None:
            return self._open.get(session_id)
        stored = await self._shared.client.get(self._key(session_id))
        if stored is None:
            return None
        fields = json.loads(stored)
        return Session(session_id, fields["csrf"], fields["created"], fields["expires"], fields["password"])

    def _key(self, session_id: str) -> str:
        assert self._shared is not None
        return self._shared.key("session", hashlib.sha256(session_id.encode()).hexdigest())

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._open.items() if s.expires <= now]:
            del self._open[key]


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def csrf_matches(session: Session, offered: str | None) -> bool:
    """Whether `offered` is the session's CSRF token."""
    return bool(offered) and same_secret(session.csrf, offered or "")


class LoginThrottle:
    """Slows failed logins from one address: each failure waits `base_delay_s`, doubled for every earlier
    failure in the last 15 minutes (at most 30 s), so guessing a password costs hours instead of seconds.

    While a failure's wait runs, the address is blocked: any other attempt from it is answered at once with how
    long is left, without checking the password. So parallel guesses get one check per wait, and the owner's right
    password is never queued behind them (it once waited 30.3 s behind 4 parallel guesses): it is told to try
    again in a moment. Checks themselves run one at a time per address (`lock`).

    What it keeps is bounded by time, whatever the number of addresses: a lock lives only while a check holds or
    awaits it, and an address is forgotten once its failures are older than `FAILURE_MEMORY_S` and its block has
    passed (swept at most every `SWEEP_EVERY_S`, as failures come in). Each failure costs an argon2 check, so
    only so many can arrive in that window."""

    def __init__(self, base_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_delay_s = base_delay_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._locks: dict[str, _ClientLock] = {}
        self._swept_at = clock()

    @asynccontextmanager
    async def lock(self, client: str) -> AsyncIterator[None]:
        """Hold `client`'s check lock; the lock is dropped once nobody holds or awaits it."""
        held = self._locks.setdefault(client, _ClientLock())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._locks[client]

    def tracked(self) -> int:
        """How many addresses the throttle holds anything for (failures, a block, a lock)."""
        return len(self._failures.keys() | self._blocked_until.keys() | self._locks.keys())

    def recent_failures(self, client: str) -> int:
        now = self._clock()
        kept = [t for t in self._failures.get(client, []) if now - t < FAILURE_MEMORY_S]
        if kept:
            self._failures[client] = kept
        else:
            self._failures.pop(client, None)
        return len(kept)

    def blocked_for(self, client: str) -> float:
        """Seconds left before `client` may try again (0: it may now)."""
        return max(0.0, self._blocked_until.get(client, 0.0) - self._clock())

    def delay_after_failure(self, client: str) -> float:
        """Record a failure and return how long its answer waits; the address is blocked until then."""
        earlier = self.recent_failures(client)
        now = self._clock()
        self._failures.setdefault(client, []).append(now)
        delay = min(MAX_LOGIN_DELAY_S, self.base_delay_s * float(2 ** min(earlier, 16)))
        self._blocked_until[client] = now + delay
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._forget_old(now)
        return delay

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
        self._blocked_until.pop(client, None)

    def _forget_old(self, now: float) -> None:
        """Drop the addresses whose failures are all forgotten and whose block has passed."""
        for client in [c for c, times in self._failures.items() if now - times[-1] >= FAILURE_MEMORY_S]:
            del self._failures[client]
        for client in [c for c, until in self._blocked_until.items() if until <= now and c not in self._failures]:
            del self._blocked_until[client]
        self._swept_at = now


@dataclass
class _ClientLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
