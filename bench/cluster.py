"""Faults on a cluster: N plushes over 3 replicas behind nginx, one replica SIGKILLed and PostgreSQL restarted in
the middle, against one server in the same run (#22).

Everything runs on 127.0.0.1, each engine from Debian's package in a scratch folder:

    plush x N --TLS--> nginx --h2c--> plush server x R ([server] tls = "off")
                                          |-- PostgreSQL: turns, memory, pairings
                                          |-- Redis: the Gemini budget, presence, the live log

Each simulated plush is load.py's (a real gRPC client that transcribes on its own, sends the question's text,
hears the reply out and asks again), paired as a plush is: its own name and token, the certificate nginx
presents pinned. Gemini is the paced fake with a request log; every replica is given the cluster's budget
(`--rpm`, shared through Redis), past which the local model answers.

Two phases, the same plushes and settings, each on a fresh database:
1. **single**: one replica behind the same nginx, no faults: the baseline.
2. **cluster**: R replicas. At a third of the phase replica 0 is SIGKILLed (it is started again `--down-s` later
   on its port, as systemd would); at two thirds PostgreSQL is restarted (`pg_ctl restart -m fast`).

Reported per phase: answered turns per minute; first audio (TurnEnd -> first audio chunk) p50 and p99; turns
answered, refused (RESOURCE_EXHAUSTED), errored and lost. Lost is a turn the server had begun (the plush had its
turn id) that the turn log lacks at the end, or an answered one it lacks. Also the Gemini requests in the
busiest 60 s (the budget is a moving window) against the budget, and reconnects: from a plush's failed turn to
the start of its next answered one.

    .venv/bin/python bench/cluster.py                                # 16 plushes, 3 replicas, 3 min a phase
    .venv/bin/python bench/cluster.py --plushes 32 --minutes 5
    .venv/bin/python bench/cluster.py --quick                        # tiny models, 3 plushes, 30 s a phase
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import tomli_w
from harness import (
    GEMINI_REPLY,
    QUESTIONS,
    BenchModels,
    PacedGemini,
    ServerProcess,
    add_run_options,
    fmt_ms,
    load_models,
    markdown_table,
    median,
    percentile,
    server_config,
    spoken_questions,
    write_results,
)
from load import Turn, one_turn

from plush.config import load_config
from plush.device.client import CompanionClient
from plush.logs import setup_logging
from plush.scratch_engines import ScratchPostgres as PostgresServer
from plush.scratch_engines import ScratchRedis as RedisServer
from plush.scratch_engines import free_port, start_nginx
from plush.server.balancer import nginx_scratch_conf, nginx_site
from plush.server.certificate import certificate_paths, load_or_create
from plush.server.paired_plushes import PairedPlushes
from plush.server.store import Store

LLAMA_WEIGHTS = "qwen2.5-coder-0.5b-instruct-q4_k_m"
"""The local model that answers past the Gemini budget: the registry's real Qwen2.5-Coder 0.5B."""


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    replicas: int
    seconds: float
    turns: list[Turn] = field(default_factory=list)
    reconnects_s: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """(seconds into the phase, what happened): the faults."""
    gemini_times: list[float] = field(default_factory=list)
    stored: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Turn id -> (outcome, ending, backend) as the turn log holds it at the end."""


class Replicas:
    """R `plush server` processes on fixed ports of 127.0.0.1 sharing one configuration (so one may be started
    again on its own port after it was killed)."""

    def __init__(self, config: Path, folder: Path, count: int) -> None:
        self.config, self.folder = config, folder
        self.ports = [free_port() for _ in range(count)]
        self.servers: list[ServerProcess | None] = [None] * count

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self, i: int) -> None:
        server = ServerProcess(self.config, self.folder / f"replica-{i}.log", gemini_key=True, port=self.ports[i])
        self.servers[i] = server.start()

    def kill(self, i: int) -> None:
        server = self.servers[i]
        if server is not None and server.proc is not None:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=10)
            server.proc = None

    def stop(self) -> None:
        for server in self.servers:
            if server is not None:
                server.stop()


def replica_config(folder: Path, models: BenchModels, *, database: str, redis: str, gemini: str, rpm: int) -> Path:
    """harness.server_config's server, made a replica: plain gRPC behind the balancer, the shared database,
    Redis and data folder, Gemini first with the cluster's budget, then the local model."""
    path = server_config(folder, models, llm="auto", gemini_url=gemini, llama_max_tokens=40)
    sections = tomllib.loads(path.read_text(encoding="utf-8"))
    sections["server"].update({"tls": "off", "database": database, "redis": redis, "data_dir": str(folder / "data")})
    sections["llm"]["gemini"].update({"requests_per_minute": rpm, "requests_per_day": 0, "tokens_per_minute": 0})
    path.write_text(tomli_w.dumps(sections), encoding="utf-8")
    return path


async def pair_plushes(config: Path, count: int) -> dict[str, str]:
    """`plush pair add` for each simulated plush, through the server's own pairing code: name -> token."""
    server = load_config(config, search=False).server
    async with await Store.open(server.database_location()) as store:
        paired = await PairedPlushes.open(store, server.data_folder())
        return {f"bench-plush-{i}": await paired.add(f"bench-plush-{i}", replace=True) for i in range(count)}


@contextlib.contextmanager
def balancer(folder: Path, config: Path, replicas: list[str]) -> Iterator[tuple[str, bytes]]:
    """nginx in front of `replicas` with the site `plush cluster nginx` writes: (its address, the certificate
    it presents, which each plush pins)."""
    server = load_config(config, search=False).server
    load_or_create(server)
    cert, key = certificate_paths(server)
    port = free_port()
    site = nginx_site(f"127.0.0.1:{port}", replicas, cert, key)
    proc = start_nginx(folder / "nginx", nginx_scratch_conf(folder / "nginx", site), port)
    try:
        yield f"127.0.0.1:{port}", cert.read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def plush_loop(
    i: int, connect: Callable[[int], CompanionClient], questions: list[bytes], until: float, phase: Phase
) -> None:
    """One plush: ask, hear the reply out, ask again until `until`. Its first turn only warms up. A failed
    turn starts a reconnect, which its next answered turn ends."""
    async with connect(i) as client:
        await client.wait_ready(60)
        await asyncio.sleep(random.uniform(0, 2.0))  # people do not all press at the same moment
        n, failed_at = 0, None
        while time.perf_counter() < until:
            q = (i + n) % len(questions)
            started = time.perf_counter()
            try:
                turn = await one_turn(client, i, questions[q], QUESTIONS[q], stt_on=False)
            except Exception as exc:  # the channel failing is an errored turn, not the plush's end
                turn = Turn(i, started, outcome="error", detail=f"{type(exc).__name__}: {exc}"[:200])
                turn.ended = time.perf_counter()
            if n:
                phase.turns.append(turn)
            n += 1
            if turn.outcome == "answered" and failed_at is not None:
                phase.reconnects_s.append(turn.started - failed_at)
                failed_at = None
            elif turn.outcome in ("error", "hang") and failed_at is None:
                failed_at = turn.ended
            if turn.outcome != "answered":
                await asyncio.sleep(random.uniform(0.4, 0.6))
                continue
            playing_left = turn.reply_audio_s - (turn.ended - turn.started - len(questions[q]) / 32000)
            await asyncio.sleep(max(0.0, playing_left) + 0.5)


async def faults(phase: Phase, replicas: Replicas, postgres: PostgresServer, start: float, down_s: float) -> None:
    """The cluster phase's faults, each on its own clock: replica 0 SIGKILLed at a third and started again
    `down_s` later (it then loads its models); PostgreSQL restarted at two thirds. Each is logged with its
    moment."""

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + phase.seconds * fraction - time.perf_counter()))

    def note(what: str) -> None:
        phase.events.append((time.perf_counter() - start, what))

    async def replica_down() -> None:
        await at(1 / 3)
        replicas.kill(0)
        note("replica 0 SIGKILLed")
        await asyncio.sleep(down_s)
        note("replica 0 starting again")
        await asyncio.to_thread(replicas.start, 0)
        note("replica 0 listening again")

    async def database_restart() -> None:
        await at(2 / 3)
        note("PostgreSQL restart begins")
        await asyncio.to_thread(postgres.restart)
        note("PostgreSQL accepting connections again")

    await asyncio.gather(replica_down(), database_restart())


async def stored_turns(url: str) -> dict[str, tuple[str, str, str]]:
    """Every turn in the log: id -> (outcome, ending, backend)."""
    db = await asyncpg.connect(url)
    try:
        rows = await db.fetch("SELECT id, outcome, ending, backend FROM turns")
        return {row["id"]: (row["outcome"], row["ending"], row["backend"]) for row in rows}
    finally:
        await db.close()


async def run_phase(  # noqa: PLR0917 - a phase's settings
    name: str,
    count: int,
    args: argparse.Namespace,
    models: BenchModels,
    questions: list[bytes],
    postgres: PostgresServer,
    redis: str,
) -> Phase:
    phase = Phase(name, count, args.minutes * 60)
    folder = args.work / name
    database = postgres.create_database(f"bench_{name}")
    log = folder / "gemini-requests.log"
    folder.mkdir(parents=True, exist_ok=True)
    with PacedGemini(GEMINI_REPLY, args.ttft, args.tokens_per_s, requests_log=log) as gemini:
        config = replica_config(folder, models, database=database, redis=redis, gemini=gemini.base_url, rpm=args.rpm)
        tokens = await pair_plushes(config, args.plushes)
        replicas = Replicas(config, folder, count)
        try:
            for i in range(count):  # one after the other: the first migrates the schema
                replicas.start(i)
            with balancer(folder, config, replicas.addresses) as (address, certificate):

                def connect(i: int) -> CompanionClient:
                    name = f"bench-plush-{i}"
                    return CompanionClient(address, name, token=tokens[name], pinned_cert=certificate)

                start = time.perf_counter()
                until = start + phase.seconds
                loops = [plush_loop(i, connect, questions, until, phase) for i in range(args.plushes)]
                if count > 1:
                    loops.append(faults(phase, replicas, postgres, start, args.down_s))
                await asyncio.gather(*loops)
                phase.seconds = time.perf_counter() - start
        finally:
            replicas.stop()  # SIGTERM: each replica stores its turns before it exits
            keep_logs(folder, args.out / f"{args.name}-logs" / name)
        phase.gemini_times = gemini.request_times()
    try:
        phase.stored = await stored_turns(database)
    except OSError as exc:
        log_tail = (postgres.folder / "log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"PostgreSQL stopped answering ({exc}); its log ends:\n{log_tail}") from exc
    return phase


def keep_logs(folder: Path, dest: Path) -> None:
    """The replicas' logs and the fake Gemini's request times, kept beside the results (the work folder goes)."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in [*folder.glob("replica-*.log"), folder / "gemini-requests.log"]:
        if log.exists():
            shutil.copy(log, dest / log.name)


def busiest_minute(times: list[float]) -> int:
    """The most requests in any 60 s (the budget's window moves)."""
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 60:
            first += 1
        most = max(most, last - first + 1)
    return most


def summary(phase: Phase, rpm: int) -> dict[str, Any]:
    answered = [t for t in phase.turns if t.outcome == "answered"]
    begun = [t for t in phase.turns if t.turn_id]
    stored = {t.turn_id for t in begun} & set(phase.stored)
    lost = [t for t in begun if t.turn_id not in stored]
    failed = [t for t in phase.turns if t.outcome in ("error", "hang")]
    first = [t.first_audio_ms for t in answered]
    return {
        "phase": phase.name,
        "replicas": phase.replicas,
        "seconds": phase.seconds,
        "turns_per_min": len(answered) / phase.seconds * 60,
        "first_audio_median": median(first),
        "first_audio_p99": percentile(first, 99),
        "answered": len(answered),
        "refused": sum(t.outcome == "refused" for t in phase.turns),
        "errored": len(failed),
        "errored_unbegun": sum(not t.turn_id for t in failed),
        "lost": len(lost),
        "lost_answered": sum(t.outcome == "answered" for t in lost),
        "answered_by": dict(Counter(phase.stored[t.turn_id][2] for t in answered if t.turn_id in stored)),
        "errored_stored_as": dict(
            Counter("/".join(phase.stored[t.turn_id][:2]) for t in failed if t.turn_id in stored)
        ),
        "error_details": dict(Counter(t.detail[:90] for t in failed)),
        "gemini_requests": len(phase.gemini_times),
        "gemini_busiest_minute": busiest_minute(phase.gemini_times),
        "gemini_budget_rpm": rpm,
        "reconnects": len(phase.reconnects_s),
        "reconnect_median_s": median(phase.reconnects_s),
        "reconnect_max_s": max(phase.reconnects_s, default=float("nan")),
        "events": phase.events,
    }


def report(data: dict[str, Any]) -> str:
    rows = []
    for s in data["phases"]:
        rows.append([
            s["phase"], s["replicas"], f"{s['turns_per_min']:.0f}", fmt_ms(s["first_audio_median"]),
            fmt_ms(s["first_audio_p99"]), s["answered"], s["refused"], s["errored"], s["lost"],
            f"{s['gemini_busiest_minute']} / {s['gemini_budget_rpm']}",
            f"{s['reconnects']}: {s['reconnect_median_s']:.1f} s / {s['reconnect_max_s']:.1f} s"
            if s["reconnects"] else "-",
        ])  # fmt: skip
    header = ["phase", "replicas", "turns/min", "first audio p50", "p99", "answered", "refused", "errored", "lost",
              "Gemini busiest 60 s / budget", "reconnects: median / max"]  # fmt: skip
    lines = [markdown_table(header, rows), ""]
    for s in data["phases"]:
        for moment, what in s["events"]:
            lines.append(f"- {s['phase']}, {moment:.0f} s: {what}")
        lines.append(f"- {s['phase']}: answered by {s['answered_by']}")
        if s["errored"]:
            lines.append(f"- {s['phase']}: errored turns stored as {s['errored_stored_as'] or 'nothing'}; "
                         f"{s['errored_unbegun']} had not begun on a server; causes: {s['error_details']}")  # fmt: skip
    return "\n".join(lines)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    models = load_models(
        args.models, llama=True, tiny_dir=args.out / ".tiny-models",
        llama_weights=LLAMA_WEIGHTS if args.models == "real" else None,
    )  # fmt: skip
    questions = spoken_questions(models)  # only their lengths matter: how long each button is held
    postgres = PostgresServer().start()
    redis = RedisServer(args.work / "redis").start()
    try:
        phases = []
        for n, (name, count) in enumerate((("single", 1), ("cluster", args.replicas))):
            url = redis.url.rsplit("/", 1)[0] + f"/{n}"  # a Redis database a phase: budgets start empty
            phases.append(await run_phase(name, count, args, models, questions, postgres, url))
    finally:
        redis.stop()
        postgres.stop()
    return {
        "phases": [summary(p, args.rpm) for p in phases],
        "turns": {p.name: [{"outcome": t.outcome, "turn_id": t.turn_id, "first_audio_ms": t.first_audio_ms,
                            "detail": t.detail} for t in p.turns] for p in phases},
        "settings": {"plushes": args.plushes, "replicas": args.replicas, "minutes_per_phase": args.minutes,
                     "gemini_rpm": args.rpm, "gemini_ttft_s": args.ttft, "models": models.kind,
                     "replica_down_s": args.down_s},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plushes", type=int, default=16, help="plushes talking at once (at most 32; default 16)")
    parser.add_argument("--replicas", type=int, default=3, help="replicas in the cluster phase (default 3)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each phase (default 3)")
    parser.add_argument("--rpm", type=int, default=30, help="the cluster's Gemini budget, requests a minute")
    parser.add_argument("--down-s", type=float, default=20.0, help="how long the killed replica stays down")
    parser.add_argument("--ttft", type=float, default=0.4, help="fake Gemini's time to first token, s")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="fake Gemini's words a second")
    add_run_options(parser, quick="tiny models, 3 plushes, 30 s a phase", name="cluster")
    args = parser.parse_args()
    if not 1 <= args.plushes <= 32:
        parser.error("--plushes is 1 to 32")
    if args.quick:
        args.models, args.plushes, args.minutes, args.down_s = "tiny", 3, 0.5, 3.0
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="plush-cluster-bench-") as work:
        args.work = Path(work)
        data = asyncio.run(measure(args))
    text = report(data)
    _, md_path = write_results(args.name, data, text, args.out)
    print(text)
    print(f"\nwritten: {md_path}")


if __name__ == "__main__":
    main()
