"""A real Redis for the tests: Debian's redis-server (scripts/setup --test) on 127.0.0.1, nothing kept on disk.

Redis cannot be told to pick a free port itself (`--port 0` turns TCP off), so a free port is chosen first and
the start is tried again on the rare port taken in between. Ready means its log said so, not a guessed delay.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

READY = "Ready to accept connections"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; `url` is where it listens, `stop()` ends it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: run scripts/setup --test (it installs Debian's redis-server)"
        self.folder.mkdir(parents=True, exist_ok=True)
        log: list[str] = []
        for _ in range(5):
            self.port = _free_port()
            command = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
            command += ["--dir", str(self.folder), "--protected-mode", "yes", "--loglevel", "notice"]
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.folder
            )
            assert self.process.stdout is not None
            for line in self.process.stdout:
                log.append(line)
                if READY in line:
                    # Keep draining its log so a chatty server never blocks on a full pipe.
                    threading.Thread(target=self.process.stdout.read, daemon=True).start()
                    return self
            self.process.wait()
        raise AssertionError("redis-server did not start:\n" + "".join(log[-20:]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
