"""The `plush` command as a user runs it: real processes, a config file, the tiny models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomli_w
from conftest import config_sections
from fakes.companion import ScriptedCompanion, pcm_chunks, text
from fakes.pulse import sine_pcm
from test_end_to_end import speechlike_wav
from tiny_models import TinyModels

from plush.voice_models.audio import read_wav

PLUSH = [sys.executable, "-m", "plush"]


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLUSH, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_device_takes_a_turn_from_a_file_and_writes_the_reply(
    server_process: str, config_file: Path, tmp_path: Path
) -> None:
    wav = speechlike_wav(tmp_path / "question.wav")
    out = tmp_path / "answer.wav"
    result = run(
        "device", "--config", str(config_file), "--server", server_process,
        "--audio-file", str(wav), "--output-file", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "you:" in result.stdout
    assert "answered by llama" in result.stdout
    pcm, rate = read_wav(out)
    assert rate == 22050 and len(pcm) > 0


def test_file_mode_keeps_the_partial_reply_and_prints_the_error_on_its_own_line(
    config_file: Path, tmp_path: Path
) -> None:
    """The server's speech fails half way: what arrived is in the output file, the error follows the reply text."""
    arrived = sine_pcm(220, 0.6, 22050)
    reply = [text("Hello there, "), text("little one."), *pcm_chunks(arrived, 22050, 0.2)]
    out = tmp_path / "answer.wav"
    with ScriptedCompanion(reply, fail_with="speech synthesis failed") as peer:
        result = run(
            "device", "--config", str(config_file), "--server", peer.address,
            "--audio-file", str(speechlike_wav(tmp_path / "q.wav")), "--output-file", str(out),
            env={**os.environ, "PLUSH_DEVICE__STT": "server"},
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert read_wav(out) == (arrived, 22050), "the reply as far as it came"
    lines = result.stdout.splitlines()
    assert "plush: Hello there, little one." in lines
    assert "the server refused the turn (INTERNAL): speech synthesis failed" in lines
    assert "Traceback" not in result.stdout + result.stderr


def test_chat_reads_piped_lines_and_shows_the_backend(server_process: str, config_file: Path) -> None:
    result = run("chat", "--config", str(config_file), "--server", server_process, "--show-backend",
                 stdin="Hello!\n\nHow are you?\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("plush> ")]
    assert len(lines) == 2
    assert all(line.endswith("[llama: no_api_key]") for line in lines)


def test_chat_without_a_server_is_one_clear_error(config_file: Path) -> None:
    result = run("chat", "--config", str(config_file), "--server", "127.0.0.1:9", stdin="hi\n",
                 env={**os.environ, "PLUSH_DEVICE__CONNECT_TIMEOUT_S": "0.5"})  # fmt: skip
    assert result.returncode == 1
    assert "cannot reach the Plush server at 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_without_models_says_how_to_get_them(tmp_path: Path) -> None:
    result = run("server", "--port", "0", env={**os.environ, "PLUSH_MODELS__DIR": str(tmp_path / "empty")})
    assert result.returncode == 1
    assert "plush models download" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets_and_applies_environment(config_file: Path) -> None:
    env = {**os.environ, "GEMINI_API_KEY": "AIzaVerySecretKey9876", "PLUSH_SERVER__PORT": "6000"}
    result = run("config", "show", "--config", str(config_file), env=env)
    assert result.returncode == 0, result.stderr
    assert "AIzaVerySecret" not in result.stdout
    assert 'gemini_api_key = "****9876"' in result.stdout
    assert "port = 6000" in result.stdout


def test_config_init_writes_the_commented_defaults(tmp_path: Path) -> None:
    target = tmp_path / "plush.toml"
    assert run("config", "init", str(target)).returncode == 0
    assert "# Plush configuration" in target.read_text()
    again = run("config", "init", str(target))
    assert again.returncode == 1 and "--force" in again.stderr


def test_bad_config_is_reported_with_the_key_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nsample_rate = 'high'\n")
    result = run("config", "show", "--config", str(bad))
    assert result.returncode == 1
    assert "'device.sample_rate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_list_names_the_defaults() -> None:
    result = run("models", "list")
    assert result.returncode == 0
    for name in ("whisper-base", "piper-en-lessac-medium", "qwen2.5-1.5b-instruct-q4_k_m"):
        assert name in result.stdout
    # With no Korean voice set, Korean replies get the built-in fallback, and it says so.
    assert "ko replies are spoken by: espeak-ng ko (built-in fallback" in " ".join(result.stdout.split())


def test_help_explains_every_command() -> None:
    result = run("--help")
    for command in ("server", "device", "chat", "models", "config"):
        assert command in result.stdout


def test_device_uses_the_configured_server_when_no_flag_is_given(
    server_process: str, models: TinyModels, tmp_path: Path
) -> None:
    """`scripts/companion` and the systemd service run `plush device` with no --server: the config names it."""
    sections = config_sections(models, tmp_path)
    sections["device"]["server"] = server_process
    config = tmp_path / "device.toml"
    config.write_text(tomli_w.dumps(sections), encoding="utf-8")
    wav = speechlike_wav(tmp_path / "q.wav")
    result = run("device", "--config", str(config), "--audio-file", str(wav), "--output-file", str(tmp_path / "a.wav"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plush: " in result.stdout and "answered by llama" in result.stdout
