"""A real PostgreSQL for the tests: Debian's server binaries (scripts/setup --test), a scratch cluster on 127.0.0.1.

initdb refuses to run as root, and CI runs as root: then the cluster belongs to Debian's `postgres` user, run
through `runuser`, in a folder under /tmp that user can reach. The cluster uses the C.UTF-8 locale, which full-text
search needs to see Hangul as letters. Ready means `pg_ctl start --wait` returned (it waits for connections), not a
guessed delay. Nothing is kept: fsync is off and the folder is removed on stop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_ROOT = Path("/usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, if any."""
    versions = sorted(BIN_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


class PostgresServer:
    """One scratch PostgreSQL cluster; `url(database)` is where it listens, `stop()` ends and removes it."""

    def __init__(self) -> None:
        found = postgres_bin()
        assert found, "PostgreSQL is missing: run scripts/setup --test (it installs Debian's postgresql)"
        self.bin = found
        self.folder = Path(tempfile.mkdtemp(prefix="plush-pg-", dir="/tmp"))
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        self._as_postgres = os.geteuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "data"
        init = self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c full_page_writes=off"
        started = self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "log"), "-o", options, "-w", "start"
        )
        if started.returncode != 0:
            log = (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
            raise AssertionError("PostgreSQL did not start:\n" + started.stdout + started.stderr + log)
        return self

    def create_database(self, name: str) -> str:
        """A fresh database in the cluster; its URL."""
        made = self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        assert made.returncode == 0, made.stdout + made.stderr
        return self.url(name)

    def restart(self) -> None:
        """Stop (fast: open connections are closed) and start again on the same port; returns once it accepts
        connections again. What a database restart does to its clients (bench/cluster.py)."""
        data, log = str(self.folder / "data"), str(self.folder / "log")  # -l again: else its output is our pipe
        done = self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-m", "fast", "-w", "restart")
        assert done.returncode == 0, done.stdout + done.stderr

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
