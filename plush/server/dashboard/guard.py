"""The gate in front of every dashboard route: no session, no answer; no CSRF token, no change.

A pure ASGI middleware, so it covers every route the app has, the framework's own OpenAPI pages included,
without each route having to remember a dependency. Pages answer a visitor without a session with a redirect
to the login (303), everything else with 401. A state-changing request (POST, PUT, PATCH, DELETE) must carry
the session's CSRF token in the `X-CSRF-Token` header or, for a form, its `csrf_token` field (the body is read
here and handed on unchanged); without it the answer is 403.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from plush.server.dashboard.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions, csrf_matches

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/login", "/metrics"})
"""`/login` checks its own CSRF cookie; `/metrics` its own token (or a loopback caller)."""
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM_BYTES = 256 * 1024


class Guard:
    """Sessions and CSRF for every route; the session found is put in `scope["state"]["session"]`."""

    def __init__(self, app: App, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        session = await self.sessions.get(_cookie(headers.get("cookie", ""), COOKIE))
        if session is None:
            await _refuse_visitor(scope, headers, send)
            return
        if scope["method"] in UNSAFE:
            receive, offered = await _offered_token(headers, receive)
            if not csrf_matches(session, offered):
                await _json(send, 403, "missing or wrong CSRF token: reload the page and try again")
                return
        scope.setdefault("state", {})["session"] = session
        await self.app(scope, receive, send)


def session_of(scope: Scope) -> Session:
    """The session the guard let through (every guarded route has one)."""
    session: Session = scope["state"]["session"]
    return session


def _cookie(header: str, name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


async def _offered_token(headers: dict[str, str], receive: Receive) -> tuple[Receive, str | None]:
    """The CSRF token the request offers, and a `receive` that replays any body read to find it."""
    if (token := headers.get(CSRF_HEADER)) is not None:
        return receive, token
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return receive, None
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if len(body) > MAX_FORM_BYTES or not message.get("more_body", False):
            break
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    values = parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD, [])
    return replay, (values[0] if len(values) == 1 else None)


async def _refuse_visitor(scope: Scope, headers: dict[str, str], send: Send) -> None:
    path: str = scope["path"]
    page = scope["method"] == "GET" and not path.startswith("/api/") and "text/html" in headers.get("accept", "")
    if page:
        target = "/login" + (f"?next={quote(path)}" if path != "/" else "")
        await send({"type": "http.response.start", "status": 303, "headers": [(b"location", target.encode())]})
        await send({"type": "http.response.body", "body": b""})
        return
    await _json(send, 401, "log in first", extra=[(b"www-authenticate", b'Cookie realm="plush dashboard"')])


async def _json(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
