"""Which setting wins, as the README says: a command-line flag over the environment, the environment over the
file, the file over the defaults. `plush server` is run in its own process, on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PLUSH_COMMAND

from plush.config import load_config


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plush.toml"
    path.write_text("[server]\nport = 7000\nhost = '0.0.0.0'\npersona = 'ko'\n")
    monkeypatch.setenv("PLUSH_SERVER__PORT", "7001")
    monkeypatch.setenv("PLUSH_SERVER__HOST", "10.0.0.1")
    config = load_config(path, server={"host": "127.0.0.1"})
    assert (config.server.host, config.server.port, config.server.persona) == ("127.0.0.1", 7001, "ko")


def test_plush_server_listens_where_its_flags_say_whatever_the_environment_says(config_file: Path) -> None:
    env = {**os.environ, "PLUSH_SERVER__HOST": "0.0.0.0", "PLUSH_SERVER__PORT": "1"}
    proc = subprocess.Popen(
        [*PLUSH_COMMAND, "server", "--config", str(config_file), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    address = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not address:
            line = proc.stdout.readline()
            seen.append(line)
            if match := re.search(r"listening on (\S+):(\d+)", line):
                address = match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert address == "127.0.0.1", "".join(seen)
