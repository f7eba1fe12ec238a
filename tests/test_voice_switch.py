"""`plush voice use NAME` switches a running server's voice at its next turn, without a restart; `use default`
goes back to the config's voice; `list` and `remove` keep the store and the marker consistent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from conftest import StartServer
from fakes.gemini import FakeGemini
from tiny_models import build_piper_voice
from typer.testing import CliRunner

from plush.cli.voice_train import add_train_commands
from plush.device.client import CompanionClient
from plush.logs import setup_logging
from plush.voice_models.cloning.voice_store import VoiceStore, VoiceStoreError


@pytest.fixture(autouse=True)
def logging_back_on_stderr() -> Iterator[None]:
    """The commands run in-process set up logging on the test runner's captured stderr; rebind it afterwards."""
    yield
    setup_logging()


def voice(*args: str) -> str:
    app = typer.Typer()
    add_train_commands(app)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


VOICE_COMMANDS = (
    "import typer; from plush.cli.voice_train import add_train_commands as add; a = typer.Typer(); add(a); a()"
)


def voice_in_another_process(*args: str) -> str:
    """`plush voice ...` as the owner runs it: its own process, beside the running server."""
    done = subprocess.run(
        [sys.executable, "-c", VOICE_COMMANDS, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def spoken_samples(port: int) -> tuple[int, int]:
    """One chat turn with audio: (samples received, their sample rate)."""
    async with CompanionClient(f"127.0.0.1:{port}", "voice-switch-test") as client:
        events = [e async for e in client.chat("Say something.", want_audio=True)]
    chunks = [e.audio for e in events if e.WhichOneof("kind") == "audio"]
    assert chunks, f"the reply was spoken: {events}"
    return sum(len(c.data) for c in chunks) // 2, chunks[0].sample_rate


async def test_use_switches_a_running_servers_voice_without_restart(
    start_gemini_server: StartServer, fake_gemini: FakeGemini, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    store = VoiceStore.in_models(models)
    # The tiny test voices make N*256 samples for N phonemes at their own rate: one at half the rate speaks the
    # same reply twice as long once resampled to the turn's rate, which the wire shows.
    build_piper_voice(store.onnx_path("slow").parent, sample_rate=11025, name="slow")
    config = tmp_path / "plush.toml"
    config.write_text(f'[models]\ndir = "{models}"\n', encoding="utf-8")
    server = await start_gemini_server(models={"dir": str(models)})
    for _ in range(3):
        fake_gemini.reply("The same little reply.")

    before, rate = await spoken_samples(server.port)
    assert rate == 22050

    assert "speaks with slow" in voice_in_another_process("use", "slow", "--force", "--config", str(config))
    switched, rate_then = await spoken_samples(server.port)
    assert rate_then == 22050  # the turn's rate was chosen at its start; the new voice is resampled to it
    assert switched == pytest.approx(2 * before, rel=0.02)

    voice_in_another_process("use", "default", "--config", str(config))
    again, rate_again = await spoken_samples(server.port)  # at the slow voice's rate, chosen at the turn's start
    assert again / rate_again == pytest.approx(before / rate, rel=0.02), "the config's voice speaks again"


def test_list_and_remove_keep_the_marker_consistent(tmp_path: Path) -> None:
    models = tmp_path / "models"
    store = VoiceStore.in_models(models)
    for name in ("mina", "papa"):
        build_piper_voice(store.onnx_path(name).parent, name=name)
    config = tmp_path / "plush.toml"
    config.write_text(f'[models]\ndir = "{models}"\n', encoding="utf-8")

    voice("use", "mina", "--force", "--config", str(config))
    listing = voice("list", "--config", str(config))
    assert "mina" in listing and "papa" in listing and "yes" in listing
    assert "was in use" in voice("remove", "mina", "--yes", "--config", str(config))
    assert store.active() is None and not store.has("mina")
    with pytest.raises(VoiceStoreError, match="no voice 'mina'"):
        store.use("mina")
    with pytest.raises(VoiceStoreError, match="cannot name a voice"):
        store.onnx_path("../escape")
    assert store.use("papa") is not None and store.active() == "papa"


def checked(cer: float, base_cer: float | None) -> dict[str, object]:
    """A stored `plush voice check` result, as `check` writes it."""

    def score(name: str, value: float) -> dict[str, object]:
        return {"voice": name, "real_time_factor": 0.1, "cer": value, "audio_seconds": 9.0, "sentences": []}

    base = score("en_US-joe-medium", base_cer) if base_cer is not None else None
    return {"voice": score("mina", cer), "base": base, "language": "en", "checked": "2026-12-03 10:00:00"}


def test_use_refuses_a_voice_its_check_heard_far_worse_than_its_base(tmp_path: Path) -> None:
    models = tmp_path / "models"
    store = VoiceStore.in_models(models)
    for name in ("mina", "papa"):
        build_piper_voice(store.onnx_path(name).parent, name=name)
    store.update_info("mina", exported="2026-12-03 09:00:00", check=checked(0.91, 0.02))
    store.update_info("papa", exported="2026-12-03 09:00:00", check=checked(0.05, 0.02))
    config = tmp_path / "plush.toml"
    config.write_text(f'[models]\ndir = "{models}"\n', encoding="utf-8")
    app = typer.Typer()
    add_train_commands(app)

    refused = CliRunner().invoke(app, ["use", "mina", "--config", str(config)])
    assert refused.exit_code != 0  # before: taken without a word
    assert "character error rate of 0.91" in str(refused.exception) and "base en_US-joe-medium scores 0.02" in str(
        refused.exception
    )
    assert store.active() is None, "the server keeps its voice"
    assert "speaks with papa" in voice("use", "papa", "--config", str(config)), "a voice Whisper follows is used"
    assert "speaks with mina" in voice("use", "mina", "--max-cer-above-base", "1", "--config", str(config))
    assert "speaks with mina" in voice("use", "mina", "--force", "--config", str(config))
    assert store.active() == "mina"
