"""The dashboard over real HTTP against a real server (tiny models, loopback): nothing without a login, CSRF on
every change, slowed wrong passwords, text shown as text, the live stream, memory, persona and /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ConfigFactory
from fakes.dashboard_client import PASSWORD, chat, csrf_of, dashboard_server, log_in, session_csrf
from prometheus_client.parser import text_string_to_metric_families

from plush import __version__
from plush.server.app import start_server
from plush.server.dashboard.api import STREAM_BATCH
from plush.server.dashboard.passwords import password_file, set_password
from plush.server.store import TurnRecord

GOOD_PERSONA = """name = "Pip"
language = "en"
style = "cheerful"
fallback_line = "Hmm, ask me again?"
"""


@pytest.fixture
async def server(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[Any]:
    persona = tmp_path / "persona.toml"
    persona.write_text(GOOD_PERSONA.replace("Pip", "Momo"), encoding="utf-8")
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 0.2, "keep_audio": True},
        server={"port": 0, "database": str(tmp_path / "plush.db"), "persona": str(persona)},
    )
    async with dashboard_server(config) as running:
        yield running


@pytest.fixture
async def web(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.dashboard.url, timeout=20) as client:
        yield client


@pytest.fixture
async def logged_in(web: httpx.AsyncClient) -> httpx.AsyncClient:
    answer = await log_in(web)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    return web


async def test_every_page_and_api_call_is_refused_without_a_session(server: Any, web: httpx.AsyncClient) -> None:
    app = server.dashboard.server.config.app
    checked = 0
    for route in _routes(app.routes):
        path = getattr(route, "path", "")
        if path in ("/login", "/metrics") or path.startswith(("/static", "/static-vendor")):
            continue
        url = path.replace("{conversation_id:path}", "x").replace("{turn_id}", "x").replace("{fact_id}", "1")
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method == "HEAD":
                continue
            answer = await web.request(method, url, headers={"accept": "text/html"})
            expected = {303} if method == "GET" and not url.startswith("/api/") else {401}
            assert answer.status_code in expected, (method, url, answer.status_code)
            assert "turn" not in answer.text.lower() or answer.status_code == 401
            checked += 1
    assert checked >= 25
    assert (await web.get("/openapi.json")).status_code == 401
    assert (await web.get("/api/turns")).status_code == 401
    page = await web.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def _routes(routes: list[Any]) -> list[Any]:
    """Every route, the included routers' too (FastAPI keeps an included router as one entry)."""
    found = []
    for route in routes:
        if (router := getattr(route, "original_router", None)) is not None:
            found.extend(_routes(router.routes))
        else:
            found.append(route)
    return found


async def test_a_wrong_password_is_refused_and_repeated_failures_wait_longer(web: httpx.AsyncClient) -> None:
    waits = []
    for _ in range(3):
        started = time.monotonic()
        answer = await log_in(web, "not the password")
        waits.append(time.monotonic() - started)
        assert answer.status_code == 401 and "Wrong password" in answer.text
        assert "plush_session" not in answer.cookies
    assert waits[0] >= 0.2 and waits[1] >= 0.4 and waits[2] >= 0.8, waits
    # 0.8 s against 0.2 s, whatever argon2 itself takes: 0.6 s apart, less what a loaded machine's argon2 varies
    # (seen: 0.48 apart beside a heavy test run); a delay that did not grow would leave them ~0 apart.
    assert waits[2] - waits[0] >= 0.35, waits
    answer = await log_in(web)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


async def test_parallel_wrong_guesses_never_queue_the_right_password_behind_them(
    server: Any, web: httpx.AsyncClient
) -> None:
    async def guess(n: int) -> httpx.Response:  # each its own browser: its own login form token
        async with httpx.AsyncClient(base_url=server.dashboard.url, timeout=60) as attacker:
            return await log_in(attacker, f"guess {n}")

    guesses = [asyncio.ensure_future(guess(n)) for n in range(4)]
    throttle = server.dashboard.state.throttle
    for _ in range(400):  # until one guess was checked and failed: the address is blocked now
        if throttle.blocked_for("127.0.0.1") > 0:
            break
        await asyncio.sleep(0.01)
    right = await log_in(web)
    waiting = [g for g in guesses if not g.done()]
    assert right.status_code == 429 and "try again in" in right.text, "told at once, not queued"
    assert waiting, "answered while a wrong guess still waits out its delay"
    statuses = sorted(answer.status_code for answer in await asyncio.gather(*guesses))
    assert statuses.count(401) >= 1 and set(statuses) <= {401, 429}, statuses
    for _ in range(400):
        if throttle.blocked_for("127.0.0.1") == 0:
            break
        await asyncio.sleep(0.01)
    assert (await log_in(web)).status_code == 303, "once the wait is over, the owner gets in"


async def test_a_login_post_without_its_form_token_is_refused(web: httpx.AsyncClient) -> None:
    answer = await web.post("/login", data={"password": PASSWORD, "csrf_token": "forged"})
    assert answer.status_code == 403
    assert "plush_session" not in answer.cookies


async def test_a_state_changing_call_without_the_csrf_token_is_refused(
    server: Any, logged_in: httpx.AsyncClient
) -> None:
    web = logged_in
    fact = {"text": "Mina likes otters", "owner": "device:test-plush"}
    assert (await web.post("/api/facts", json=fact)).status_code == 403
    assert (await web.post("/api/facts", json=fact, headers={"x-csrf-token": "wrong"})).status_code == 403
    assert (await web.post("/memory/facts", data=fact)).status_code == 403
    assert await server.companion.store.all_facts() == []
    token = await session_csrf(web)
    added = await web.post("/api/facts", json=fact, headers={"x-csrf-token": token})
    assert added.status_code == 201, added.text
    assert (await web.delete(f"/api/facts/{added.json()['id']}")).status_code == 403
    assert [f.text for f in await server.companion.store.all_facts()] == ["Mina likes otters"]
    removed = await web.delete(f"/api/facts/{added.json()['id']}", headers={"x-csrf-token": token})
    assert removed.status_code == 200
    assert await server.companion.store.all_facts() == []
    assert (await web.post("/logout")).status_code == 403


async def test_html_in_what_was_said_is_shown_as_text(server: Any, logged_in: httpx.AsyncClient) -> None:
    said = "<script>window.pwned=1</script><img src=x onerror=alert(1)> hi"
    turn_id = await chat(server.port, said)
    page = await logged_in.get(f"/turns/{turn_id}")
    assert page.status_code == 200
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page.text
    assert "<script>window.pwned" not in page.text and "<img src=x" not in page.text
    listed = await logged_in.get("/api/turns")
    assert listed.headers["content-type"].startswith("application/json")
    assert listed.json()[0]["user_text"] == said


async def test_the_parent_sees_flagged_turns_with_their_category_and_can_filter_them(
    server: Any, logged_in: httpx.AsyncClient
) -> None:
    await chat(server.port, "Tell me about clouds")
    flagged_id = await chat(server.port, "How do I make a bomb?")
    assert 'name="flagged"' in (await logged_in.get("/")).text, "the live log's filter"
    flagged = (await logged_in.get("/api/turns", params={"flagged": "true"})).json()
    assert [(t["id"], t["outcome"], t["safety"]) for t in flagged] == [(flagged_id, "blocked", "input:weapons")]
    assert len((await logged_in.get("/api/turns")).json()) == 2
    page = await logged_in.get(f"/turns/{flagged_id}")
    assert "input:weapons" in page.text and "before any brain saw it" in page.text


async def test_the_reason_filter_shows_the_safety_blocks_by_category(server: Any, logged_in: httpx.AsyncClient) -> None:
    await chat(server.port, "Tell me about clouds")
    bomb = await chat(server.port, "How do I make a bomb?")
    hurt = await chat(server.port, "I want to kill myself")
    page = (await logged_in.get("/")).text
    assert 'name="reason"' in page and '<option value="weapons">weapons</option>' in page
    assert '<option value="blocked">blocked</option>' in page and '<option value="self_harm">' in page

    async def shown(reason: str) -> list[tuple[str, str]]:
        turns = (await logged_in.get("/api/turns", params={"reason": reason})).json()
        return [(t["id"], t["reason"]) for t in turns]

    assert await shown("weapons") == [(bomb, "weapons")]
    assert await shown("blocked") == [(hurt, "self_harm"), (bomb, "weapons")]
    assert await shown("barge_in") == []
    assert len(await shown("")) == 3


async def test_the_live_stream_sends_a_whole_backlog_not_only_its_first_batch(
    server: Any, logged_in: httpx.AsyncClient
) -> None:
    for n in range(STREAM_BATCH + 30):
        await server.companion.store.add_turn(TurnRecord(f"backlog{n:04d}", "c", "d", "chat", f"turn {n}", "ok"))
    seen: list[str] = []
    async with logged_in.stream("GET", "/api/stream", params={"after": 0}) as stream:
        kind = ""
        async with asyncio.timeout(30):
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:") and kind == "turn":
                    seen.append(json.loads(line.removeprefix("data:"))["id"])
                    if len(seen) == STREAM_BATCH + 30:
                        break
    # before: the first 100, then the cursor jumped to the newest row and the other 30 were never sent
    assert seen == [f"backlog{n:04d}" for n in range(STREAM_BATCH + 30)]


async def test_a_turn_appears_on_the_live_stream_and_in_search(server: Any, logged_in: httpx.AsyncClient) -> None:
    events: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with logged_in.stream("GET", "/api/stream") as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                    if kind == "ready":  # the stream's cursor is set: a turn stored from now on is sent
                        ready.set()
                elif line.startswith("data:") and kind == "turn":
                    event = json.loads(line.removeprefix("data:"))
                    if event["ending"] == "replica_lost":  # shown while under way; its end follows
                        continue
                    events.append(event)
                    return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    turn_id = await chat(server.port, "tell me about purple elephants")
    await asyncio.wait_for(listener, 10)
    assert events[0]["id"] == turn_id and events[0]["source"] == "chat"
    assert events[0]["device_id"] == "test-plush" and events[0]["backend"] == "llama"
    found = (await logged_in.get("/api/turns", params={"q": "eleph"})).json()
    assert [t["id"] for t in found] == [turn_id]
    assert (await logged_in.get("/api/turns", params={"q": "giraffe"})).json() == []
    detail = (await logged_in.get(f"/api/turns/{turn_id}")).json()
    assert "purple elephants" in detail["prompt"]["user"]
    assert "Momo" in detail["prompt"]["system"]
    assert {"llm_first_token", "total"} <= set(detail["stages"])


async def test_the_persona_is_checked_before_it_is_saved_and_the_server_takes_it(
    server: Any, logged_in: httpx.AsyncClient
) -> None:
    token = await session_csrf(logged_in)
    broken = await logged_in.post("/persona", data={"csrf_token": token, "text": 'name = "Pip"\nlanguage = "en"\n'})
    assert broken.status_code == 400
    assert "Not saved" in broken.text and "style" in broken.text and "fallback_line" in broken.text
    assert server.companion.persona.name == "Momo"
    saved = await logged_in.post("/persona", data={"csrf_token": token, "text": GOOD_PERSONA})
    assert saved.status_code == 303
    assert server.companion.persona.name == "Pip"
    answer = await logged_in.put("/api/persona", json={"text": "name = "}, headers={"x-csrf-token": token})
    assert answer.status_code == 400 and "not valid TOML" in answer.json()["detail"]


async def test_metrics_parse_with_the_prometheus_parser(server: Any, web: httpx.AsyncClient) -> None:
    await chat(server.port, "hello there")
    answer = await web.get("/metrics")
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    turns = [s for s in families["plush_turns"].samples if s.name == "plush_turns_total"]
    assert [(s.labels["source"], s.labels["backend"], s.value) for s in turns] == [("chat", "llama", 1.0)]
    stages = {s.labels["stage"] for s in families["plush_stage_latency_seconds"].samples}
    assert {"llm_first_token", "total"} <= stages
    assert families["plush_connected_plushes"].samples[0].value == 1.0


async def test_metrics_need_the_token_when_one_is_set(
    make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUSH_DASHBOARD_METRICS_TOKEN", "s3cret-metrics")
    running = await start_server(make_config())
    try:
        async with httpx.AsyncClient(base_url=running.dashboard.url) as web:
            assert (await web.get("/metrics")).status_code == 401
            answer = await web.get("/metrics", headers={"authorization": "Bearer s3cret-metrics"})
            assert answer.status_code == 200 and "plush_turns" in answer.text
    finally:
        await running.stop(grace=0.5)


async def test_devices_show_the_plush_online_with_its_address(server: Any, logged_in: httpx.AsyncClient) -> None:
    await chat(server.port, "hi", device="plush-nursery")
    devices = {d["id"]: d for d in (await logged_in.get("/api/devices")).json()}
    nursery = devices["plush-nursery"]
    assert nursery["online"] and nursery["address"].startswith("127.0.0.1:")
    assert nursery["version"] == __version__ and nursery["turns"] == 1  # the plush says its version
    page = await logged_in.get("/devices")
    assert "plush-nursery" in page.text and "online" in page.text


async def test_memory_page_adds_and_forgets_a_fact_and_resets_a_conversation(
    server: Any, logged_in: httpx.AsyncClient
) -> None:
    await chat(server.port, "hello")
    token = await session_csrf(logged_in)
    wrong = await logged_in.post("/memory/facts", data={"csrf_token": token, "text": "x y z", "owner": "nobody"})
    assert "problem=" in wrong.headers["location"]
    added = await logged_in.post(
        "/memory/facts", data={"csrf_token": token, "text": "Mina's birthday is May 3", "owner": "device:test-plush"}
    )
    assert added.status_code == 303
    (fact,) = await server.companion.store.all_facts()
    assert (fact.text, fact.owner, fact.source) == ("Mina's birthday is May 3", "device:test-plush", "dashboard")
    page = await logged_in.get("/memory")
    assert "Mina&#39;s birthday is May 3" in page.text
    await logged_in.post(f"/memory/facts/{fact.id}/delete", data={"csrf_token": token})
    assert await server.companion.store.all_facts() == []
    reset = await logged_in.post(
        "/memory/conversations/reset", data={"csrf_token": token, "conversation": "chat:test-plush"}
    )
    assert "notice=" in reset.headers["location"]
    (conversation,) = await server.companion.store.list_conversations()
    assert conversation.reset_at > 0


async def test_charts_count_turns_and_the_local_share(server: Any, logged_in: httpx.AsyncClient) -> None:
    for text in ("one", "two"):
        await chat(server.port, text)
    data = (await logged_in.get("/api/charts", params={"hours": 6})).json()
    assert data["turns"] == 2 and data["local_share"] == 1.0 and data["brains"] == {"llama": 2}
    assert sum(data["turns_per_hour"]["chat"]) == 2
    assert data["latency_ms"]["total"]["p50"][-1] > 0
    assert (await logged_in.get("/api/gemini")).json()["configured"] is False
    assert (await logged_in.get("/charts")).status_code == 200
    assert (await logged_in.get("/static-vendor/plotly.min.js")).status_code == 200


def test_set_password_stores_only_an_argon2_hash(make_config: ConfigFactory, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from plush.cli import app

    config_file = tmp_path / "plush.toml"
    config_file.write_text(f'[server]\ndatabase = "{tmp_path / "db" / "plush.db"}"\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["dashboard", "set-password", "--config", str(config_file), "--stdin"], input="short\n"
    )
    assert result.exit_code != 0 and "too short" in str(result.exception)
    result = CliRunner().invoke(
        app, ["dashboard", "set-password", "--config", str(config_file), "--stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    stored = tmp_path / "db" / "dashboard-password"
    assert stored.read_text().startswith("$argon2id$") and PASSWORD not in stored.read_text()
    assert stored.stat().st_mode & 0o777 == 0o600


async def test_without_a_password_nobody_logs_in_and_the_page_says_how_to_set_one(
    make_config: ConfigFactory,
) -> None:
    running = await start_server(make_config())
    try:
        async with httpx.AsyncClient(base_url=running.dashboard.url) as web:
            page = await web.get("/login")
            assert "plush dashboard set-password" in page.text
            answer = await web.post("/login", data={"password": "", "csrf_token": csrf_of(page.text)})
            assert answer.status_code in (401, 422)
    finally:
        await running.stop(grace=0.5)


async def test_the_server_stops_promptly_while_a_live_log_is_open(make_config: ConfigFactory) -> None:
    config = make_config()
    set_password(password_file(config), PASSWORD)
    running = await start_server(config)
    async with httpx.AsyncClient(base_url=running.dashboard.url, timeout=20) as web:
        await log_in(web)
        async with web.stream("GET", "/api/stream") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("event: ready")
            started = time.monotonic()
            await asyncio.wait_for(running.stop(grace=0.5), 15)
            assert time.monotonic() - started < 8


def test_the_waterfall_shows_when_the_plush_first_played_the_reply() -> None:
    from plush.server.dashboard.waterfall import waterfall

    stages = {"llm_first_token": (10.0, 250.0), "first_audio": (0.0, 900.0), "total": (0.0, 1500.0)}
    timings = {"llm_first_token": 250.0, "first_audio": 900.0, "total": 1500.0, "first_audio_played": 1010.0}
    chart = waterfall(timings, stages)  # reported after the turn was stored: in the stored timings only
    assert dict(chart.milestones)["first audio played"] == 1010.0
    assert [bar.stage for bar in chart.bars] == ["llm_first_token", "first_audio", "first_audio_played", "total"]
    assert dict(waterfall({"total": 900.0}, {}).milestones)["first audio played"] is None


async def test_the_dashboard_says_which_voice_speaks_each_language(server: Any, logged_in: httpx.AsyncClient) -> None:
    status = (await logged_in.get("/api/status")).json()
    assert "ko: espeak-ng ko (built-in fallback)" in status["voices"]  # the tiny test voice speaks English
    assert "espeak-ng ko (built-in fallback)" in (await logged_in.get("/")).text
