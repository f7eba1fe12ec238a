"""Personas: the file is checked with clear messages, and the server picks up edits without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ConfigFactory
from fakes.gemini import FakeGemini

from plush.device.client import CompanionClient
from plush.server.app import start_server
from plush.server.persona import PersonaSource

PLUSH = [sys.executable, "-m", "plush"]
PERSONA = """
name = "Pip"
language = "en"
style = "cheerful"
fallback_line = "Hmm, ask me again in a moment."
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLUSH, *args], capture_output=True, text=True, timeout=60, check=False)


def bump(path: Path, text: str) -> None:
    """Rewrite the file so its modification time surely changes (coarse file-system clocks)."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


async def test_the_server_reloads_an_edited_persona_and_keeps_the_last_good_one(
    tmp_path: Path, make_config: ConfigFactory, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    persona = tmp_path / "pip.toml"
    persona.write_text(PERSONA, encoding="utf-8")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    base = make_config()
    config = make_config(
        llm={"backend": "auto", "gemini": {"base_url": fake_gemini.base_url}, "llama": base.llm.llama.model_dump()},
        server={**base.server.model_dump(mode="json", exclude_none=True), "persona": str(persona)},
    )
    running = await start_server(config)
    try:

        async def system_prompt_of_next_turn() -> str:
            async with CompanionClient(f"127.0.0.1:{running.port}", "persona-test") as client:
                [e async for e in client.chat("Hi!")]
            return fake_gemini.last_request.system_instruction or ""

        assert "You are Pip" in await system_prompt_of_next_turn()
        bump(persona, PERSONA.replace('"Pip"', '"Pop"'))
        assert "You are Pop" in await system_prompt_of_next_turn()
        bump(persona, 'name = "Broken"\nstyle = ')  # a half-saved edit
        assert "You are Pop" in await system_prompt_of_next_turn(), "a broken edit keeps the last good persona"
    finally:
        await running.stop(grace=0)


def test_a_built_in_persona_never_reloads() -> None:
    source = PersonaSource("ko")
    assert source.current() is source.current()
    assert source.current().language == "ko"


def test_persona_check_summarises_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "pip.toml"
    path.write_text(PERSONA, encoding="utf-8")
    result = run("persona", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "Pip (en)" in result.stdout and "tokens" in result.stdout


def test_persona_check_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "Pip"\nlanguage = "en"\nstyle = "x"\nmood = "happy"\n', encoding="utf-8")
    result = run("persona", "check", str(path))
    assert result.returncode == 1
    assert "'fallback_line'" in result.stderr and "'mood'" in result.stderr
    assert "Traceback" not in result.stderr


def test_persona_check_of_a_missing_file_lists_the_built_ins(tmp_path: Path) -> None:
    result = run("persona", "check", str(tmp_path / "nope.toml"))
    assert result.returncode == 1 and "built-in personas: en, ko" in result.stderr


def test_the_korean_persona_prompt_is_shown(tmp_path: Path) -> None:
    result = run("persona", "show", "ko")
    assert result.returncode == 0 and "모모" in result.stdout
