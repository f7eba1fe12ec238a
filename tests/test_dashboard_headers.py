"""Security headers on every dashboard response, and a Content-Security-Policy the dashboard itself lives within:
every page runs in Debian's Chromium with no policy violation (the charts draw, the waterfall shows), while
markup that slipped into a page cannot run. Real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, chat, dashboard_server, log_in
from playwright.async_api import Browser, async_playwright, expect
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push([e.violatedDirective, e.blockedURI || "inline", e.sourceFile, e.lineNumber].join(" "));
});
"""


@pytest.fixture
async def server(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[Any]:
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 0.05},
        server={"port": 0, "database": str(tmp_path / "plush.db")},
    )
    async with dashboard_server(config) as running:
        yield running


def assert_protected(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where


async def test_every_response_carries_the_security_headers(server: Any) -> None:
    turn_id = await chat(server.port, "hello")
    async with httpx.AsyncClient(base_url=server.dashboard.url, timeout=20) as web:
        anonymous = [
            await web.get("/login"),
            await web.get("/", headers={"accept": "text/html"}),  # the guard's redirect
            await web.get("/api/status"),  # the guard's 401
            await web.get("/static/dashboard.css"),
            await web.get("/static/nope.js"),
            await web.get("/metrics"),
            await web.post("/login", data={"password": "x", "csrf_token": "forged"}),
        ]
        await log_in(web)
        signed_in = [
            await web.get(path, headers={"accept": "text/html"})
            for path in ("/", f"/turns/{turn_id}", "/charts", "/devices", "/memory", "/persona", "/docs")
        ]
        signed_in += [await web.get("/api/turns"), await web.get("/static-vendor/plotly.min.js")]
        signed_in += [await web.post("/api/facts", json={"text": "a", "owner": "b"})]  # no CSRF token: 403
    for response in [*anonymous, *signed_in]:
        assert_protected(response)
    assert [r.status_code for r in anonymous] == [200, 303, 401, 200, 404, 200, 403]
    assert "'unsafe-inline'" not in signed_in[0].headers["content-security-policy"]


async def test_every_page_lives_within_the_policy_in_a_real_browser(server: Any) -> None:
    require_chromium()
    turn_id = await chat(server.port, "tell me about otters")
    base = server.dashboard.url.rstrip("/")
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.add_init_script(VIOLATIONS)
            await page.goto(base + "/login")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("#live")).to_have_text("● live")
            await expect(page.locator(f'#turns tr[data-turn="{turn_id}"]')).to_be_visible()
            seen: dict[str, list[str]] = {"/": await page.evaluate("window.cspViolations")}
            checks = {
                f"/turns/{turn_id}": ".wf-row[data-stage=total] .wf-bar",
                "/charts": ".js-plotly-plot .main-svg",
                "/devices": "table",
                "/memory": "#add-fact",
                "/persona": "main",
            }
            for path, drawn in checks.items():
                await page.goto(base + path)
                await expect(page.locator(drawn).first).to_be_visible()
                seen[path] = await page.evaluate("window.cspViolations")
            assert {path: found for path, found in seen.items() if found} == {}
            await page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', '<img src=\"/nope.png\" onerror=\"window.ran = 1\">')"
            )
            await page.wait_for_function("window.cspViolations.length > 0")  # the policy refused the handler
            assert await page.evaluate("window.ran === undefined"), "an inline handler must not run"
        finally:
            await browser.close()
