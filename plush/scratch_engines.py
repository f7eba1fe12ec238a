"""Debian's PostgreSQL, Redis and nginx started in a scratch folder on 127.0.0.1: for a cluster to try on this
computer (`scripts/cluster`) and for the tests and benchmarks that need the real engines.

Nothing here is for keeping data: PostgreSQL runs with fsync off and its folder is removed when it stops, Redis
saves nothing. Each engine is ready when it says so, never after a guessed delay: `pg_ctl start --wait` returns
once PostgreSQL accepts connections, Redis logs "Ready to accept connections", nginx has its port open.

initdb refuses to run as root: as root, the PostgreSQL cluster belongs to Debian's `postgres` user, run through
`runuser`, in a folder under /tmp that user can reach. The cluster uses the C.UTF-8 locale, which full-text search
needs to see Hangul as letters. Redis cannot pick a free port itself (`--port 0` turns TCP off), so a free port is
chosen first and the start is tried again on the rare port taken in between.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from plush.errors import PlushError

POSTGRES_ROOT = Path("/usr/lib/postgresql")
REDIS_READY = "Ready to accept connections"
NGINX = "/usr/sbin/nginx"
INSTALL_HINT = "apt-get install postgresql redis-server nginx-light (or scripts/setup --test)"


class EngineError(PlushError):
    """An engine is missing or did not start; the message says which, and how to install it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, if any."""
    versions = sorted(
        POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    return versions[-1].parent if versions else None


def nginx_binary() -> str | None:
    """Debian's nginx, if installed."""
    found = shutil.which("nginx") or NGINX
    return found if Path(found).is_file() else None


class ScratchPostgres:
    """One scratch PostgreSQL cluster; `url(database)` is where it listens, `stop()` ends it and removes it.

    `folder` is a new one under /tmp by default; give the folder of one started earlier to stop it from
    another process (`scripts/cluster stop`)."""

    def __init__(self, folder: Path | None = None) -> None:
        found = postgres_bin()
        if found is None:
            raise EngineError(f"PostgreSQL is not installed: {INSTALL_HINT}")
        self.bin = found
        self.folder = folder or Path(tempfile.mkdtemp(prefix="plush-pg-", dir="/tmp"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        self._as_postgres = os.geteuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (the first line of its postmaster.pid)."""
        try:
            return int((self.folder / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> ScratchPostgres:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "data"
        init = self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise EngineError("PostgreSQL's initdb failed:\n" + init.stdout + init.stderr)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c full_page_writes=off"
        started = self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "log"), "-o", options, "-w", "start"
        )
        if started.returncode != 0:
            log = (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
            raise EngineError("PostgreSQL did not start:\n" + started.stdout + started.stderr + log)
        return self

    def create_database(self, name: str) -> str:
        """A fresh database in the cluster; its URL."""
        made = self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        if made.returncode != 0:
            raise EngineError(f"cannot create the database {name}:\n" + made.stdout + made.stderr)
        return self.url(name)

    def restart(self) -> None:
        """Stop (fast: open connections are closed) and start again on the same port; returns once it accepts
        connections again. What a database restart does to its clients (bench/cluster.py)."""
        data, log = str(self.folder / "data"), str(self.folder / "log")  # -l again: else its output is our pipe
        done = self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-m", "fast", "-w", "restart")
        if done.returncode != 0:
            raise EngineError("PostgreSQL did not restart:\n" + done.stdout + done.stderr)

    def stop(self) -> None:
        """End it at once (nothing is kept) and remove its folder."""
        if (self.folder / "data").is_dir():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


class ScratchRedis:
    """One redis-server process saving nothing; `url` is where it listens, `stop()` ends it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, own_session: bool = False) -> ScratchRedis:
        """Start it; `own_session` keeps it out of the terminal's Ctrl+C (its starter stops it)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise EngineError(f"redis-server is not installed: {INSTALL_HINT}")
        self.folder.mkdir(parents=True, exist_ok=True)
        log: list[str] = []
        for _ in range(5):
            self.port = free_port()
            command = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
            command += ["--dir", str(self.folder), "--protected-mode", "yes", "--loglevel", "notice"]
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self.folder,
                start_new_session=own_session,
            )
            assert self.process.stdout is not None
            for line in self.process.stdout:
                log.append(line)
                if REDIS_READY in line:
                    # Keep draining its log so a chatty server never blocks on a full pipe.
                    threading.Thread(target=self.process.stdout.read, daemon=True).start()
                    return self
            self.process.wait()
        raise EngineError("redis-server did not start:\n" + "".join(log[-20:]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_nginx(folder: Path, conf: str, port: int, *, own_session: bool = False) -> subprocess.Popen[bytes]:
    """Debian's nginx on a whole `conf` (see `plush.server.balancer.nginx_scratch_conf`: no daemon, everything in
    `folder`); returns once it listens on `port`. `own_session` keeps it out of the terminal's Ctrl+C."""
    binary = nginx_binary()
    if binary is None:
        raise EngineError(f"nginx is not installed: {INSTALL_HINT}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nginx.conf"
    path.write_text(conf, encoding="utf-8")
    log = folder / "error.log"
    proc = subprocess.Popen([binary, "-c", str(path), "-p", str(folder), "-e", str(log)], start_new_session=own_session)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise EngineError("nginx stopped: " + log.read_text()) from None
            time.sleep(0.05)  # nginx has no readiness signal but its open port
    proc.terminate()
    raise EngineError("nginx did not listen: " + log.read_text())
