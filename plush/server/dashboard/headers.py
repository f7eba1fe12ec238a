"""Security headers on every dashboard response, the guard's refusals and the static files included.

The pages load only the dashboard's own scripts and styles (`/static/`, and Plotly from `/static-vendor/`), with
no inline script, style element or style attribute (the waterfall's bars are SVG, placed by attributes; Plotly's
own inline style is kept out, see plotly_bundle.py), so the Content-Security-Policy allows nothing else: text
that slipped into a page as markup would still not run, and no other site can frame the dashboard (clickjacking)
or learn its URLs from the Referer. The framework's own API pages (`/docs`, `/redoc`) load Swagger UI and ReDoc
from their CDN with an inline starter script, so those pages alone get a policy that allows exactly that.
"""

from __future__ import annotations

from plush.server.dashboard.guard import App, Message, Receive, Scope, Send

EMPTY_STYLE = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
"""The hash of an empty `<style>`: Plotly adds one and fills it through the CSSOM (`insertRule`), which the
policy does not govern; a style element with any text in it stays refused."""
POLICY = (
    f"default-src 'none'; script-src 'self'; style-src 'self' {EMPTY_STYLE}; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""What every page may load: its own files only."""
CDN = "https://cdn.jsdelivr.net"
API_DOCS_POLICY = (
    f"default-src 'none'; script-src 'self' {CDN} 'unsafe-inline'; style-src 'self' {CDN} "
    "https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src 'self' data: "
    "https://fastapi.tiangolo.com https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Swagger UI and ReDoc as FastAPI serves them (behind the login; they show only the API's own description)."""
API_DOCS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the policy and the headers above to every HTTP response (replacing any the route set)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (API_DOCS_POLICY if scope["path"] in API_DOCS else POLICY).encode()
        added = [(b"content-security-policy", policy), *HEADERS]
        names = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*kept, *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
