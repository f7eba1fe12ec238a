"""A logged-in (or not) HTTP client for the dashboard of a real server, and a text turn sent through gRPC Chat."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from plush.config import PlushConfig
from plush.device.client import CompanionClient
from plush.server.app import RunningServer, start_server
from plush.server.dashboard.passwords import password_file, set_password

PASSWORD = "correct horse battery"


@asynccontextmanager
async def dashboard_server(config: PlushConfig) -> AsyncIterator[RunningServer]:
    """A real server whose dashboard takes PASSWORD, for the block; it stops at the end."""
    set_password(password_file(config), PASSWORD)
    running = await start_server(config)
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert match, "the page should carry a CSRF token"
    return match.group(1)


async def log_in(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    """Open the login page (which sets its CSRF cookie) and post the password."""
    page = await client.get("/login")
    return await client.post("/login", data={"password": password, "csrf_token": csrf_of(page.text), "next": "/"})


async def session_csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/memory", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def chat(port: int, text: str, device: str = "test-plush", **kwargs: Any) -> str:
    """Send one text turn through the Chat RPC; returns the turn id."""
    turn_id = ""
    async with CompanionClient(f"127.0.0.1:{port}", device) as client:
        await client.wait_ready(5)
        async for event in client.chat(text, **kwargs):
            turn_id = turn_id or event.turn_id
    return turn_id
