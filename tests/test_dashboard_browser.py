"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real server on 127.0.0.1.

One walk through, as an owner would: log in (a wrong password first), watch a turn sent from another client
appear without reloading, open its waterfall, add and forget a fact, edit the persona (a broken value is
refused with its message, a good one is taken), look at the charts and the devices. A screenshot of each page
goes to build/test-artifacts/dashboard/ (docs/dashboard/ keeps the ones the README shows).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, ConfigFactory
from fakes.dashboard_client import PASSWORD, chat, dashboard_server
from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = Path(os.environ.get("PLUSH_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = REPO / "build" / "test-artifacts" / "dashboard"
PERSONA = 'name = "Momo"\nlanguage = "en"\nstyle = "warm and playful"\nfallback_line = "Hmm?"\n'


def require_chromium() -> None:
    """Skip without Debian's Chromium, except on CI, where a missing browser is a setup bug."""
    if not CHROMIUM.is_file():
        message = f"Debian's Chromium is missing at {CHROMIUM}: run scripts/setup --test"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[Any]:
    persona = tmp_path / "persona.toml"
    persona.write_text(PERSONA, encoding="utf-8")
    config = make_config(
        dashboard={"port": 0, "login_delay_s": 0.1},
        server={"port": 0, "database": str(tmp_path / "plush.db"), "persona": str(persona)},
    )
    async with dashboard_server(config) as running:
        yield running


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_an_owner_logs_in_watches_a_turn_live_and_edits_memory_and_persona(browser: Browser, server: Any) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    page = await browser.new_page(viewport={"width": 1360, "height": 860})
    scripts_run: list[str] = []
    page.on("console", lambda message: scripts_run.append(message.text))
    await chat(server.port, "Good morning Momo!", device="plush-livingroom")
    base = server.dashboard.url.rstrip("/")
    await log_in(page, base)
    turn_id = await watch_a_turn_arrive(page, server)
    await open_its_detail(page, base, turn_id)
    await add_and_forget_a_fact(page, server)
    await edit_the_persona(page, server)
    await look_at_charts_and_devices(page)
    assert not [m for m in scripts_run if "error" in m.lower()], scripts_run


async def log_in(page: Page, base: str) -> None:
    """Nothing shows before the login; a wrong password is refused."""
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await shot(page, "login")
    await page.fill("input[name=password]", "wrong password")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("Wrong password")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/")
    await expect(page.locator("#live")).to_have_text("● live")
    await expect(page.locator("#turns tr")).to_have_count(1)


async def watch_a_turn_arrive(page: Page, server: Any) -> str:
    """A turn sent from another client appears without a reload; what was said is shown as text."""
    await page.evaluate("window.stayed = 'same page'")
    said = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> what do otters eat?'
    turn_id = await chat(server.port, said)
    row = page.locator(f'#turns tr[data-turn="{turn_id}"]')
    await expect(row).to_be_visible(timeout=10_000)
    await expect(page.locator("#turns tr").first).to_have_attribute("data-turn", turn_id)
    await expect(row.locator("td.said")).to_have_text(said)
    assert await page.evaluate("window.stayed") == "same page"
    assert await page.evaluate("window.pwned === undefined")
    await shot(page, "live-log")

    # Search narrows the log to the turns with that word.
    await page.fill("input[name=q]", "otter")
    await expect(page.locator("#turns tr")).to_have_count(1)
    await page.fill("input[name=q]", "")
    await expect(page.locator("#turns tr")).to_have_count(2)
    return turn_id


async def open_its_detail(page: Page, base: str, turn_id: str) -> None:
    """The waterfall, the brain and the prompt that was sent."""
    said = await page.locator(f'#turns tr[data-turn="{turn_id}"] td.said').text_content()
    await page.locator(f'#turns tr[data-turn="{turn_id}"]').click()
    await expect(page).to_have_url(f"{base}/turns/{turn_id}")
    await expect(page.locator(".wf-row[data-stage=total] .wf-bar")).to_be_visible()
    await expect(page.locator(".wf-row[data-stage=llm_first_token]")).to_be_visible()
    await expect(page.locator("pre").first).to_contain_text("You are Momo")
    await expect(page.locator("p.said").first).to_have_text(said or "")
    await shot(page, "turn-detail")


async def add_and_forget_a_fact(page: Page, server: Any) -> None:
    """Memory: a fact added from its form, listed, then forgotten."""
    await page.click("nav >> text=Memory")
    await page.fill("#add-fact input[name=text]", "Mina's favourite animal is the otter")
    await page.fill("#add-fact input[name=owner]", "device:plush-livingroom")
    await page.click("#add-fact button")
    await expect(page.get_by_role("status")).to_contain_text("Remembered fact")
    fact_row = page.locator("tr[data-fact]", has_text="favourite animal is the otter")
    await expect(fact_row).to_have_count(1)
    await shot(page, "memory")
    await fact_row.get_by_role("button", name="Forget").click()
    await expect(page.get_by_role("status")).to_contain_text("Forgot fact")
    await expect(page.locator("tr[data-fact]")).to_have_count(0)
    assert await server.companion.store.all_facts() == []


async def edit_the_persona(page: Page, server: Any) -> None:
    """A broken value is refused with its message; a good one is taken by the running server."""
    await page.click("nav >> text=Persona")
    await page.fill("textarea[name=text]", PERSONA.replace('style = "warm and playful"\n', ""))
    await page.click("#persona-form button")
    await expect(page.locator("#persona-error")).to_contain_text("'style': Field required")
    await shot(page, "persona-refused")
    assert server.companion.persona.name == "Momo"
    await page.fill("textarea[name=text]", PERSONA.replace("Momo", "Pip"))
    await page.click("#persona-form button")
    await expect(page.get_by_role("status")).to_contain_text("Saved: Pip")
    await expect(page.locator("header .who .pill").first).to_have_text("Pip")
    assert server.companion.persona.name == "Pip"


async def look_at_charts_and_devices(page: Page) -> None:
    """Charts (Plotly, served by the server itself) and the devices."""
    await page.click("nav >> text=Charts")
    await expect(page.locator("#latency .main-svg").first).to_be_visible(timeout=15_000)
    await expect(page.locator("#summary")).to_contain_text("2 turns")
    await expect(page.locator("#speculation .main-svg").first).to_be_visible()
    await expect(page.locator("#speculation-summary")).to_contain_text("0 started, 0 adopted")
    await shot(page, "charts")
    await page.click("nav >> text=Devices")
    await expect(page.locator('tr[data-device="plush-livingroom"]')).to_contain_text("online")
    await shot(page, "devices")
