"""A malformed credential is refused, never a server error: tokens, form tokens and cookies outside ASCII (or
outside UTF-8) get the same 401 or 403 as a wrong one. Real server on 127.0.0.1, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, csrf_of, dashboard_server, log_in

ODD = ["é", "토큰", "\x00", "x" * 10_000]
"""Form values: outside ASCII, a NUL, far too long."""
ODD_HEADERS = [b"\xc3\xa9", b"\xff\xfe", "토큰".encode()]
"""Header bytes: UTF-8 outside ASCII, bytes that are not UTF-8 at all."""


@pytest.fixture
async def web(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("PLUSH_DASHBOARD_METRICS_TOKEN", "s3cret-metrics")
    config = make_config(dashboard={"port": 0, "login_delay_s": 0.05})
    async with dashboard_server(config) as running:
        assert running.dashboard is not None
        async with httpx.AsyncClient(base_url=running.dashboard.url, timeout=20) as client:
            yield client


async def test_a_metrics_token_outside_ascii_gets_401(web: httpx.AsyncClient) -> None:
    for odd in ODD_HEADERS:
        answer = await web.get("/metrics", headers={"authorization": b"Bearer " + odd})
        assert answer.status_code == 401, (odd, answer.text)
    assert (await web.get("/metrics", headers={"authorization": "Bearer s3cret-metrics"})).status_code == 200


async def test_a_login_form_token_outside_ascii_is_refused_like_a_wrong_one(web: httpx.AsyncClient) -> None:
    await web.get("/login")  # sets the form's cookie
    for odd in ODD:
        answer = await web.post("/login", data={"password": PASSWORD, "csrf_token": odd})
        assert answer.status_code == 403, (odd[:10], answer.text[:200])
        assert "plush_session" not in answer.cookies
    page = await web.get("/login")
    ok = await web.post("/login", data={"password": PASSWORD, "csrf_token": csrf_of(page.text)})
    assert ok.status_code == 303


async def test_odd_session_cookies_csrf_headers_and_passwords_are_refused_not_errors(web: httpx.AsyncClient) -> None:
    assert (await log_in(web)).status_code == 303
    for odd in ODD_HEADERS:
        answer = await web.post("/api/facts", json={"text": "a", "owner": "b"}, headers={"x-csrf-token": odd})
        assert answer.status_code == 403, answer.text
    web.cookies.clear()
    for odd in ODD_HEADERS:
        cookie = b"plush_session=" + odd
        assert (await web.get("/api/status", headers={"cookie": cookie})).status_code == 401
    for odd in ODD:
        page = await web.get("/login")
        answer = await web.post("/login", data={"password": odd, "csrf_token": csrf_of(page.text)})
        assert answer.status_code in (401, 429), (odd[:10], answer.status_code)  # 429: the last one's wait
