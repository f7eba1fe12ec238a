"""The dashboard behind a real HTTPS reverse proxy (Debian's nginx on 127.0.0.1, configured as the README shows):
with `trusted_proxies`, clients keep their own addresses, so /metrics still answers this computer only, each
client has its own login slowdown, and the session cookie is Secure.

Every request reaches nginx from 127.0.0.1; the test's nginx takes the client address it then passes on from an
`X-Test-Client` header (its realip module), standing in for clients elsewhere on the network."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, csrf_of, dashboard_server

from plush.config import ServerConfig
from plush.scratch_engines import free_port, nginx_binary
from plush.scratch_engines import start_nginx as start_scratch_nginx
from plush.server.balancer import nginx_scratch_conf
from plush.server.certificate import certificate_paths, load_or_create

SITE = """
    location / {
        proxy_pass http://127.0.0.1:DASHBOARD;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_buffering off;  # the live log is a stream of server-sent events
        proxy_read_timeout 1h;
    }
"""
"""The README's location block (Behind a reverse proxy)."""
__all__ = ["free_port", "start_nginx"]  # what bench/cluster.py takes from here


def start_nginx(folder: Path, site: str, port: int) -> subprocess.Popen[bytes]:
    """Debian's nginx serving `site` (blocks for inside `http { }`) from a scratch folder; returns once it
    listens on `port`."""
    if nginx_binary() is None:
        pytest.skip("Debian's nginx is not installed (apt-get install nginx-light): the proxy tests need it")
    return start_scratch_nginx(folder, nginx_scratch_conf(folder, site), port)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Any]:
    """Start nginx in front of a dashboard port; yields a function taking that port and returning the HTTPS URL."""
    tls = ServerConfig(database=str(tmp_path / "nginx-tls" / "x.db"))
    load_or_create(tls)
    cert, key = certificate_paths(tls)
    started: list[subprocess.Popen[bytes]] = []

    def start(dashboard_port: int) -> str:
        port = free_port()
        site = (
            f"server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n"
            "set_real_ip_from 127.0.0.1; real_ip_header X-Test-Client;\n"
            f"{SITE.replace('DASHBOARD', str(dashboard_port))} }}\n"
        )
        started.append(start_nginx(tmp_path / "nginx", site, port))
        return f"https://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def proxied(make_config: ConfigFactory, tmp_path: Path, nginx: Any) -> AsyncIterator[str]:
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 3.0, "trusted_proxies": ["127.0.0.1"]},
        server={"port": 0, "database": str(tmp_path / "plush.db")},
    )
    async with dashboard_server(config) as running:
        assert running.dashboard is not None
        yield nginx(running.dashboard.port)


def client(url: str, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, verify=False, timeout=20, headers={"x-test-client": address})


async def test_behind_the_proxy_metrics_still_answer_this_computer_only(proxied: str) -> None:
    async with client(proxied, "192.0.2.10") as elsewhere, client(proxied, "127.0.0.1") as here:
        assert (await elsewhere.get("/metrics")).status_code == 403
        assert (await here.get("/metrics")).status_code == 200


async def test_behind_the_proxy_each_client_has_its_own_login_slowdown_and_a_secure_cookie(proxied: str) -> None:
    async with client(proxied, "192.0.2.10") as guesser, client(proxied, "198.51.100.7") as owner:
        page = await guesser.get("/login")
        guess = {"password": "not it", "csrf_token": csrf_of(page.text)}
        guesses = [asyncio.create_task(guesser.post("/login", data=guess)) for _ in range(2)]
        first, _ = await asyncio.wait(guesses, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result().status_code for t in first] == [429]  # one was checked; it blocks the guesser ...
        page = await owner.get("/login")
        answer = await owner.post("/login", data={"password": PASSWORD, "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 303  # ... but not the owner, elsewhere
        assert sorted([(await t).status_code for t in guesses]) == [401, 429]
        cookie = answer.headers["set-cookie"]
        assert "plush_session=" in cookie and "secure" in cookie.lower() and "httponly" in cookie.lower()
        assert (await owner.get("/api/status")).status_code == 200
