"""The dashboard's web app (FastAPI): the login, the guard in front of everything else, the pages and the JSON
API behind them, Plotly's script served from the installed `plotly` package, and the metrics.

FastAPI because the API documents itself (its OpenAPI page sits behind the login like everything else), it
streams server-sent events natively, and it runs on uvicorn inside the server's own event loop, next to gRPC.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from plush import __version__
from plush.pairing import same_secret
from plush.server.dashboard import api, pages
from plush.server.dashboard.guard import Guard, session_of
from plush.server.dashboard.headers import SecurityHeaders
from plush.server.dashboard.plotly_bundle import plotly_script
from plush.server.dashboard.sessions import COOKIE, CSRF_FIELD, LoginThrottle
from plush.server.dashboard.state import DashboardState

HERE = Path(__file__).parent
LOGIN_COOKIE = "plush_login_csrf"
templates = Jinja2Templates(directory=HERE / "templates")


def create_app(state: DashboardState) -> FastAPI:
    app = FastAPI(
        title="Plush dashboard",
        version=__version__,
        summary="Every turn, its latency and its cost; devices, memory and persona. Needs a login.",
    )
    app.state.dashboard = state
    app.add_middleware(Guard, sessions=state.sessions)
    app.add_middleware(SecurityHeaders)  # outermost: the guard's refusals get the headers too
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/static-vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(plotly_script(), media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request, next: str = "/") -> Response:
        if await state.sessions.get(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return _login(request, next)

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request,
        password: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not same_secret(expected, csrf_token):
            return _login(request, next, "The form was too old: try again.", status=403)
        client = request.client.host if request.client else "?"
        if (blocked := _blocked(state.throttle, client, request, next)) is not None:
            return blocked
        async with state.throttle.lock(client):
            if (blocked := _blocked(state.throttle, client, request, next)) is not None:  # failed while we waited
                return blocked
            if await asyncio.to_thread(state.passwords.verify, password):
                state.throttle.succeeded(client)
                session = await state.sessions.create()
                response = RedirectResponse(_safe_next(next), status_code=303)
                response.set_cookie(
                    COOKIE, session.id, max_age=int(state.sessions.lifetime_s), httponly=True, samesite="strict",
                    secure=_secure(request), path="/",
                )  # fmt: skip
                response.delete_cookie(LOGIN_COOKIE, path="/login")
                return response
            delay = state.throttle.delay_after_failure(client)
        await asyncio.sleep(delay)  # outside the lock: the block, not a queue, holds the others back
        message = "Wrong password." if state.passwords.configured() else "No password is set yet."
        return _login(request, next, message, status=401)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await state.sessions.end(session_of(request.scope).id)
        state.feed.notify()  # its open live logs see at once that it ended
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        token = state.config.dashboard_metrics_token
        offered = request.headers.get("authorization", "")
        if token is not None:
            if not same_secret(f"Bearer {token.get_secret_value()}", offered):
                return Response("metrics need the token: Authorization: Bearer $PLUSH_DASHBOARD_METRICS_TOKEN\n", 401)
        elif not _loopback(request.client.host if request.client else ""):
            return Response("metrics are served to this computer only (or set PLUSH_DASHBOARD_METRICS_TOKEN)\n", 403)
        await api.refresh_metrics(state)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(pages.router)
    app.include_router(api.router)
    return app


def _blocked(throttle: LoginThrottle, client: str, request: Request, next: str) -> Response | None:
    """429 at once while `client` is blocked after a wrong password (no check, no queue), else None."""
    if (left := throttle.blocked_for(client)) <= 0:
        return None
    message = f"Too many wrong passwords from here: try again in {math.ceil(left)} s."
    response = _login(request, next, message, status=429)
    response.headers["retry-after"] = str(math.ceil(left))
    return response


def _login(request: Request, next: str, error: str = "", status: int = 200) -> Response:
    state: DashboardState = request.app.state.dashboard
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    context: dict[str, Any] = {
        "error": error,
        "next": _safe_next(next),
        "csrf_field": CSRF_FIELD,
        "csrf": token,
        "configured": state.passwords.configured(),
    }
    response = templates.TemplateResponse(request, "login.html", context, status_code=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/login")
    return response


def _secure(request: Request) -> bool:
    """Whether the login cookies get the Secure flag (`[dashboard] cookie_secure`)."""
    state: DashboardState = request.app.state.dashboard
    setting = state.config.dashboard.cookie_secure
    return setting == "on" or (setting == "auto" and request.url.scheme == "https")


def _safe_next(target: str) -> str:
    """Only a path on this site: never `//evil.example` or `https://...` (an open redirect)."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
