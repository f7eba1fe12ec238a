"""`plush cluster up` and `plush cluster down` (what `scripts/cluster` runs): the layout of docs/deploy/cluster.md
on this computer, on 127.0.0.1 only, to try and to test.

`up` starts, in a scratch folder: Redis and PostgreSQL from Debian's packages (`plush.scratch_engines`; SQLite
with `--sqlite`), N `plush server` replicas (`[server] tls = "off"`, each on its own port, the dashboard on the
first only), and nginx as the gRPC balancer with the site `plush cluster nginx` writes. It pairs a plush through
the balancer into a plush data folder of its own (the computer's own pairing is left alone), prints the addresses
and the commands that talk to it, and waits. Ctrl+C (or `down` from another terminal) stops everything it started,
replicas first (SIGTERM: their turns end and are stored), then nginx, Redis and PostgreSQL.

Each piece goes into `cluster.json` in the folder as it starts, so `down` stops whatever a launcher that was
itself killed left running: it asks the launcher first, then ends any recorded process still alive, checking by
its command line that the process id is still the one it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from plush.cli.console import out
from plush.errors import PlushError
from plush.scratch_engines import EngineError, ScratchPostgres, ScratchRedis, free_port, start_nginx

STATE_FILE = "cluster.json"
READY_S = 180.0
"""How long a replica may take to load its models and listen."""
STOP_S = 30.0
"""How long a replica may take to end its turns after SIGTERM before it is killed."""


def default_folder() -> Path:
    """The scratch folder of this user's cluster: one at a time, so `down` finds it without being told."""
    return Path(tempfile.gettempdir()) / f"plush-cluster-{os.getuid()}"


@dataclass
class ClusterState:
    """What `down` needs to stop everything `up` started."""

    launcher: int
    processes: dict[str, int] = field(default_factory=dict)
    """name -> process id: replica-1..N, nginx, redis."""
    markers: dict[str, str] = field(default_factory=dict)
    """name -> a string in that process's command line (so a reused process id is never signalled)."""
    postgres_folder: str = ""

    def save(self, folder: Path) -> None:
        path = folder / STATE_FILE
        path.with_suffix(".tmp").write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        path.with_suffix(".tmp").replace(path)

    @classmethod
    def load(cls, folder: Path) -> ClusterState | None:
        try:
            return cls(**json.loads((folder / STATE_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class ClusterPlan:
    """What `up` was asked for."""

    folder: Path
    replicas: int = 3
    port: int = 50051
    """The balancer's port; 0 picks free ports for the balancer and every replica."""
    base_config: Path | None = None
    sqlite: bool = False
    plush_name: str = "plush"

    def replica_ports(self) -> list[int]:
        return [free_port() if self.port == 0 else self.port + 10 + n for n in range(1, self.replicas + 1)]


class LocalCluster:
    """One `up`: starts the pieces in order, records each, and stops them in the reverse order."""

    def __init__(self, plan: ClusterPlan) -> None:
        self.plan = plan
        self.folder = plan.folder
        self.state = ClusterState(launcher=os.getpid())
        self.plush_home = plan.folder / "plush-home"
        """The data folder of the plush paired through the balancer (`XDG_DATA_HOME` for `plush chat`)."""
        self._replicas: list[subprocess.Popen[bytes]] = []
        self._nginx: subprocess.Popen[bytes] | None = None
        self._redis: ScratchRedis | None = None
        self._postgres: ScratchPostgres | None = None

    def start(self) -> list[str]:
        """Start everything; the lines that tell a person where it is and how to talk to it."""
        plan, folder = self.plan, self.folder
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        self.state.save(folder)
        balancer = f"127.0.0.1:{free_port() if plan.port == 0 else plan.port}"
        self._redis = ScratchRedis(folder / "redis").start(own_session=True)
        self._record("redis", self._redis.process, f"{folder}/redis")
        if plan.sqlite:
            database = str(folder / "server" / "plush.db")
        else:
            self._postgres = ScratchPostgres().start()
            self.state.postgres_folder = str(self._postgres.folder)
            self.state.save(folder)
            database = self._postgres.create_database("plush")
        config = self._write_config(database, self._redis.url)
        code = _pair(config, balancer, plan.plush_name)
        first, *others = enumerate(plan.replica_ports(), start=1)
        addresses = [_wait_listening(*self._start_replica(config, *first))]  # it migrates the database first
        addresses += [_wait_listening(*started) for started in [self._start_replica(config, *o) for o in others]]
        self._start_balancer(config, balancer, addresses)
        _run_plush(["pair", "join", code], env={"XDG_DATA_HOME": str(self.plush_home)})
        return [
            f"Plush cluster on 127.0.0.1, from {folder}:",
            f"  balancer   {balancer}  (nginx, TLS with the cluster's certificate: the address plushes dial)",
            f"  replicas   {'  '.join(addresses)}  (plush server, plain gRPC)",
            f"  database   {database}",
            f"  redis      {self._redis.url}",
            f"  dashboard  {_dashboard_url(folder / 'logs' / 'replica-1.log') or 'off'}  (replica 1; its password:"
            f" plush dashboard set-password --config {config})",
            f"  logs       {folder / 'logs'}",
            *_how_to_talk(plan.plush_name, self.plush_home, code),
        ]

    def _write_config(self, database: str, redis: str) -> Path:
        """The replicas' one configuration: the base file's, with the cluster's server settings over it."""
        sections: dict[str, Any] = {}
        if self.plan.base_config is not None:
            sections = tomllib.loads(self.plan.base_config.read_text(encoding="utf-8"))
        server = sections.setdefault("server", {})
        server.update(host="127.0.0.1", tls="off", database=database, redis=redis, data_dir=str(self.folder / "server"))
        path = self.folder / "plush.toml"
        path.write_text(tomli_w.dumps(sections), encoding="utf-8")
        return path

    def _start_replica(self, config: Path, n: int, port: int) -> tuple[subprocess.Popen[bytes], Path]:
        """`plush server` on `port` in its own session (Ctrl+C reaches the launcher, which stops it in order); the
        process and its log."""
        log = self.folder / "logs" / f"replica-{n}.log"
        env = {**os.environ, **({} if n == 1 else {"PLUSH_DASHBOARD__ENABLED": "false"})}
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plush", "server", "--config", str(config), "--port", str(port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._replicas.append(proc)
        self._record(f"replica-{n}", proc, str(config))
        return proc, log

    def _start_balancer(self, config: Path, balancer: str, replicas: list[str]) -> None:
        from plush.config import load_config
        from plush.server.balancer import nginx_scratch_conf, nginx_site
        from plush.server.certificate import certificate_paths

        server = load_config(config, search=False).server
        certificate, key = certificate_paths(server)
        site = nginx_site(balancer, replicas, certificate, key, max_message_mb=server.max_message_mb)
        nginx_folder = self.folder / "nginx"
        self._nginx = start_nginx(
            nginx_folder, nginx_scratch_conf(nginx_folder, site), int(balancer.rsplit(":", 1)[1]), own_session=True
        )
        self._record("nginx", self._nginx, str(nginx_folder))

    def _record(self, name: str, proc: subprocess.Popen[Any] | None, marker: str) -> None:
        if proc is not None:
            self.state.processes[name] = proc.pid
            self.state.markers[name] = marker
            self.state.save(self.folder)

    def stop(self) -> None:
        """Stop what was started, newest first: replicas (their turns stored), nginx, Redis, PostgreSQL."""
        for proc in self._replicas:
            _end(proc.pid, signal.SIGTERM)
        for proc in self._replicas:
            _reap(proc, STOP_S)
        if self._nginx is not None:
            self._nginx.terminate()
            _reap(self._nginx, 10)
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            self._postgres.stop()
        (self.folder / STATE_FILE).unlink(missing_ok=True)


def up(plan: ClusterPlan) -> None:
    """Start the cluster, print how to use it, and stop it all on Ctrl+C or SIGTERM (`plush cluster down`)."""
    folder = plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    running = ClusterState.load(folder)
    if running is not None and _alive(running.launcher, "cluster"):
        raise PlushError(f"a cluster already runs from {folder} (process {running.launcher}): scripts/cluster stop")
    if running is not None:
        down(folder)  # what a killed launcher left behind
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in signals:  # while starting: stop at once, and stop what has started
        signal.signal(signum, _interrupt)
    cluster = LocalCluster(plan)
    try:
        lines = cluster.start()
        stopping = threading.Event()
        for signum in signals:
            signal.signal(signum, lambda *_: stopping.set())
        for line in lines:
            out.print(line, markup=False, highlight=False)
        sys.stdout.flush()
        stopping.wait()
        out.print("stopping the cluster ...", highlight=False)
    except KeyboardInterrupt:
        out.print("stopping what has started ...", highlight=False)
    finally:
        for signum in signals:  # a second Ctrl+C does not cut the stop short
            signal.signal(signum, signal.SIG_IGN)
        cluster.stop()
    out.print("stopped: every process the cluster started has ended", highlight=False)


def down(folder: Path) -> list[str]:
    """Stop the cluster running from `folder`: its launcher, and whatever it left running; the names stopped."""
    state = ClusterState.load(folder)
    if state is None:
        return []
    stopped = []
    if _alive(state.launcher, "cluster"):  # it stops what it started itself, then the rest is already gone
        os.kill(state.launcher, signal.SIGTERM)
        _wait_gone(state.launcher, STOP_S + 30)
        stopped.append("launcher")
    for name, pid in state.processes.items():
        if _alive(pid, state.markers.get(name, "")):
            _end(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_S):
                _end(pid, signal.SIGKILL)
            stopped.append(name)
    if state.postgres_folder and Path(state.postgres_folder).is_dir():
        ScratchPostgres(Path(state.postgres_folder)).stop()
        stopped.append("postgresql")
    (folder / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _pair(config: Path, balancer: str, name: str) -> str:
    """`plush pair add NAME --address BALANCER`: the code, naming the balancer and the certificate it presents."""
    said = _run_plush(["pair", "add", name, "--address", balancer, "--replace", "--config", str(config)])
    found = re.search(r"plush pair join (\S+)", said)
    if found is None:
        raise PlushError(f"`plush pair add` printed no pairing code:\n{said}")
    return found.group(1)


def _run_plush(args: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "plush", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )
    if done.returncode != 0:
        raise PlushError(f"`plush {' '.join(args[:2])}` failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The host:port a replica printed once it listens; PlushError with its last words if it stopped."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        if found := re.search(r"listening on (\S+:\d+)", text):
            return found.group(1)
        if proc.poll() is not None:
            raise PlushError(
                f"a replica stopped (exit {proc.returncode}); {log}:\n" + "\n".join(text.splitlines()[-15:])
            )
        time.sleep(0.1)
    raise PlushError(f"a replica did not listen within {READY_S:g} s; see {log}")


def _how_to_talk(name: str, home: Path, code: str) -> list[str]:
    plush = Path(sys.executable).with_name("plush")
    command = f"XDG_DATA_HOME={home} {plush if plush.is_file() else 'plush'}"
    return [
        f"A plush named '{name}' is paired through the balancer (into {home}). Talk to it:",
        f"  {command} chat        (text)",
        f"  {command} device      (the microphone, the speakers and the space bar)",
        f"  the pairing code, for a plush elsewhere on this computer: plush pair join {code}",
        "Stop it all: Ctrl+C here, or scripts/cluster stop",
    ]


def _dashboard_url(log: Path) -> str:
    """The dashboard's address, as the replica that serves it logged it (empty when it serves none)."""
    found = re.search(r"dashboard_started\S*\s.*?url=(\S+)", _read(log))
    return found.group(1).strip("'\"") if found else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _alive(pid: int, marker: str) -> bool:
    """Whether `pid` runs and its command line holds `marker` (a process id reused by another is not ours)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in command and _running(pid)


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (an ended one its parent has not reaped yet has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
    except OSError:
        return False
    return state not in ("Z", "X")


def _end(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


__all__ = ["ClusterPlan", "EngineError", "LocalCluster", "default_folder", "down", "up"]
