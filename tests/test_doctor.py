"""`plush device doctor` on this machine: a real server, the headless PulseAudio devices, the tiny models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomli_w
from conftest import config_sections
from fakes.pulse import HeadlessPulse
from tiny_models import TinyModels


def doctor(config: Path, pulse: HeadlessPulse, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, **pulse.env, "COLUMNS": "200"}
    command = [sys.executable, "-m", "plush", "device", "doctor", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_healthy_plush_passes_every_check(
    pulse: HeadlessPulse,
    server_process: str,
    config_file: Path,
) -> None:
    feeder = pulse.feed_mic(b"\x10\x20" * 48000)  # something for the microphone to hear
    try:
        result = doctor(config_file, pulse, "--server", server_process)
    finally:
        feeder.kill()
        feeder.wait(timeout=5)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("server", "speech model", "microphone", "speaker", "button"):
        assert f"ok   {name}" in result.stdout
    assert "brain: local tiny.gguf" in result.stdout, "the doctor says which LLM answers"
    assert "ko: espeak-ng ko (built-in fallback)" in result.stdout, "and which voice speaks Korean, labelled as such"
    assert "this plush is ready" in result.stdout


def test_a_missing_server_and_board_are_reported_with_what_to_fix(
    pulse: HeadlessPulse, models: TinyModels, tmp_path: Path
) -> None:
    sections = config_sections(models, tmp_path)
    sections["device"].update(button="serial", serial_port=str(tmp_path / "ttyNONE"))
    config_file = tmp_path / "serial.toml"
    config_file.write_text(tomli_w.dumps(sections), encoding="utf-8")
    feeder = pulse.feed_mic(b"\x10\x20" * 320000)  # 20 s: outlasts the 5 s server check on a busy machine
    try:
        result = doctor(config_file, pulse, "--server", "127.0.0.1:9")
    finally:
        feeder.kill()
        feeder.wait(timeout=5)
    assert result.returncode == 1
    assert "FAIL server: cannot reach the Plush server at 127.0.0.1:9" in result.stdout
    assert 'fix: start `plush server` there, or set [device] server = "HOST:50051"' in result.stdout
    assert "FAIL paw board" in result.stdout and "fix: flash hardware/firmware/" in result.stdout
    assert "ok   microphone" in result.stdout, "one failure does not stop the other checks"
    assert "2 check(s) failed: server, paw board" in result.stderr
