"""Load on one server: N simulated plushes talking at once, and a soak of many turns from a few.

Each simulated plush is a real gRPC client with its own channel to a real `plush server` (its own process, on
127.0.0.1, Gemini through the paced fake, Piper joe, Whisper base). It speaks a question, hears the reply, and
speaks again, as a person would:

- server-side STT on: the question's audio (the Piper voice joe reading it, 16 kHz) goes up in 40 ms frames at
  real-time pace, as the plush's microphone records it, then TurnEnd;
- server-side STT off: the plush transcribes on its own; it waits as long as the question lasts, then sends
  the question's text and TurnEnd.

First audio is TurnEnd (the release) -> the first reply audio chunk received; the plush reports playback
started at once (it has no speaker) and closes its side of the stream after TurnDone, as a plush does. A plush
waits until its reply would have finished playing, then half a second, before it asks again; a turn the server
refuses for load (RESOURCE_EXHAUSTED, a clear refusal) is counted apart from errors, and the plush tries again
a second later.
Anything else (another status, no answer within 60 s) is an error. The server's CPU and memory are sampled
every second (psutil); so is this process's, which shares the machine's cores with the server.

    .venv/bin/python bench/load.py                                   # N = 1 2 4 8 16 32, STT on and off, ~15 min
    .venv/bin/python bench/load.py --plushes 1 4 --seconds 30 --stt on
    .venv/bin/python bench/load.py --soak-minutes 30 --plushes 4     # the soak: memory at the start and the end
    .venv/bin/python bench/load.py --quick                           # tiny models, a few seconds: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from harness import (
    GEMINI_REPLY,
    PLOTS,
    QUESTIONS,
    RESULTS,
    PacedGemini,
    ServerProcess,
    add_run_options,
    fmt_ms,
    load_models,
    markdown_table,
    median,
    percentile,
    plot_setup,
    save_plot,
    server_config,
    spoken_questions,
    write_results,
)
from rich.progress import Progress

from plush.device.client import CompanionClient, ServerError
from plush.logs import setup_logging
from plush.protos.plush.v1 import companion_pb2 as pb

TURN_TIMEOUT_S = 60.0
FRAME_BYTES = 1280
"""40 ms of 16 kHz mono s16le: one microphone block."""


@dataclass
class Turn:
    plush: int
    started: float
    outcome: str = "answered"
    """answered, refused (RESOURCE_EXHAUSTED), error, or hang (no end within TURN_TIMEOUT_S)."""
    detail: str = ""
    turn_id: str = ""
    first_audio_ms: float = float("nan")
    """TurnEnd sent -> first audio chunk received."""
    stages: dict[str, float] = field(default_factory=dict)
    reply_audio_s: float = 0.0
    ended: float = 0.0


async def speak(call: Any, question: bytes, text: str, stt_on: bool) -> None:
    """The question as the plush sends it while the button is held (see the module docstring)."""
    if not stt_on:
        await asyncio.sleep(len(question) / 32000)
        await call.send_transcript(text)
        return
    began = time.perf_counter()
    for k, offset in enumerate(range(0, len(question), FRAME_BYTES)):
        await call.send_audio(question[offset : offset + FRAME_BYTES], 16000)
        await asyncio.sleep(max(0.0, began + (k + 1) * 0.04 - time.perf_counter()))


async def one_turn(client: CompanionClient, plush: int, question: bytes, text: str, stt_on: bool) -> Turn:
    turn = Turn(plush, time.perf_counter())
    audio_bytes, rate = 0, 0
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            call = await client.start_turn(pb.TurnStart(want_audio=True))
            await speak(call, question, text, stt_on)
            await call.end()
            released = time.perf_counter()
            async for event in call.events():
                turn.turn_id = turn.turn_id or event.turn_id
                kind = event.WhichOneof("kind")
                if kind == "audio":
                    if not audio_bytes:
                        turn.first_audio_ms = (time.perf_counter() - released) * 1000
                        await call.playback_started()  # as a plush does when its speaker starts
                    audio_bytes += len(event.audio.data)
                    rate = event.audio.sample_rate
                elif kind == "timing":
                    turn.stages[event.timing.stage] = event.timing.duration_ms
                elif kind == "error":
                    turn.outcome, turn.detail = "error", event.error.message
                elif kind == "done":
                    await call.done_writing()  # the plush's side of the turn is over
    except TimeoutError:
        turn.outcome, turn.detail = "hang", f"no end within {TURN_TIMEOUT_S:g} s"
    except ServerError as exc:
        turn.outcome = "refused" if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED else "error"
        turn.detail = str(exc)
    turn.ended = time.perf_counter()
    if rate:
        turn.reply_audio_s = audio_bytes / 2 / rate
    if turn.outcome == "answered" and not audio_bytes:
        turn.outcome, turn.detail = "error", "no reply audio"
    return turn


async def plush_loop(
    plush: int, address: str, questions: list[bytes], *, stt_on: bool, until: float, turns: list[Turn], warm_up: bool
) -> None:
    """One simulated plush: ask, hear the reply out, ask again, until `until`; its first turn only warms up (is
    not counted) with `warm_up`."""
    async with CompanionClient(address, f"load-plush-{plush}") as client:
        await client.wait_ready(30)
        await asyncio.sleep(random.uniform(0, 2.0))  # people do not all press at the same moment
        n = 0
        while time.perf_counter() < until:
            i = (plush + n) % len(questions)
            turn = await one_turn(client, plush, questions[i], QUESTIONS[i], stt_on)
            if n or not warm_up:
                turns.append(turn)
            n += 1
            if turn.outcome == "refused":
                await asyncio.sleep(random.uniform(0.8, 1.2))
                continue
            playing_left = turn.reply_audio_s - (turn.ended - turn.started - len(questions[i]) / 32000)
            await asyncio.sleep(max(0.0, playing_left) + 0.5)


class Sampler:
    """The server's and this process's CPU (% of one core) and memory, every second."""

    def __init__(self, pid: int) -> None:
        self.server, self.me = psutil.Process(pid), psutil.Process()
        self.samples: list[dict[str, float]] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        self.server.cpu_percent()
        self.me.cpu_percent()
        start = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            self.samples.append({
                "t": time.perf_counter() - start,
                "server_cpu": self.server.cpu_percent(),
                "server_rss_mb": self.server.memory_info().rss / 2**20,
                "bench_cpu": self.me.cpu_percent(),
            })  # fmt: skip

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def level_summary(
    n: int, stt_on: bool, seconds: float, turns: list[Turn], samples: list[dict[str, float]]
) -> dict[str, Any]:
    answered = [t for t in turns if t.outcome == "answered"]
    first = [t.first_audio_ms for t in answered]

    def stage(name: str) -> list[float]:
        return [t.stages[name] for t in answered if name in t.stages]

    rest = [t.first_audio_ms - t.stages.get("stt", 0.0) - t.stages.get("llm_first_token", 0.0) for t in answered]
    return {
        "plushes": n,
        "stt_on_server": stt_on,
        "seconds": seconds,
        "answered": len(answered),
        "refused": sum(t.outcome == "refused" for t in turns),
        "errors": sum(t.outcome in ("error", "hang") for t in turns),
        "error_details": sorted({t.detail for t in turns if t.outcome in ("error", "hang")})[:5],
        "error_counts": dict(Counter(t.detail[:80] for t in turns if t.outcome in ("error", "hang"))),
        "turns_per_min": len(answered) / seconds * 60,
        "first_audio_median": median(first),
        "first_audio_p99": percentile(first, 99),
        "stt_median": median(stage("stt")),
        "stt_p99": percentile(stage("stt"), 99),
        "llm_first_token_median": median(stage("llm_first_token")),
        "llm_first_token_p99": percentile(stage("llm_first_token"), 99),
        "rest_median": median(rest),
        "rest_p99": percentile(rest, 99),
        "server_cpu_mean": median([s["server_cpu"] for s in samples]) if samples else float("nan"),
        "server_rss_mb_end": samples[-1]["server_rss_mb"] if samples else float("nan"),
        "server_rss_mb_max": max((s["server_rss_mb"] for s in samples), default=float("nan")),
        "bench_cpu_mean": median([s["bench_cpu"] for s in samples]) if samples else float("nan"),
    }


async def run_level(
    address: str, pid: int, n: int, questions: list[bytes], *, stt_on: bool, seconds: float
) -> dict[str, Any]:
    turns: list[Turn] = []
    sampler = Sampler(pid)
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    warm_up = seconds >= 20  # a smoke run is too short to spare a turn
    loops = [
        plush_loop(i, address, questions, stt_on=stt_on, until=until, turns=turns, warm_up=warm_up) for i in range(n)
    ]
    await asyncio.gather(*loops)
    await sampler.stop()
    summary = level_summary(n, stt_on, time.perf_counter() - started, turns, sampler.samples)
    summary["samples"] = sampler.samples
    summary["turns"] = [
        {"plush": t.plush, "turn_id": t.turn_id, "outcome": t.outcome, "detail": t.detail,
         "first_audio_ms": t.first_audio_ms}
        for t in turns
    ]  # fmt: skip
    return summary


def count_not_stored(levels: list[dict[str, Any]], database: Path) -> None:
    """After the server has stopped (it stores every turn before it exits): the answered turns its turn log lacks.

    Under load the store once lost turns ("SQL statements in progress"); a turn the owner heard must be logged.
    """
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM turns")}
    for level in levels:
        answered = [t["turn_id"] for t in level["turns"] if t["outcome"] == "answered"]
        level["not_stored"] = sum(turn_id not in stored for turn_id in answered)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    models = load_models(args.models, tiny_dir=args.out / ".tiny-models")
    questions = spoken_questions(models)
    levels: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="plush-load-") as tmp,
        PacedGemini(GEMINI_REPLY, args.ttft, args.tokens_per_s) as gemini,
    ):
        for stt in args.stt:
            stt_on = stt == "on"
            config = server_config(
                Path(tmp) / f"stt-{stt}", models, llm="gemini", gemini_url=gemini.base_url, stt_on_server=stt_on
            )
            log = args.out / f"{args.name}-server-stt-{stt}.log"
            these: list[dict[str, Any]] = []
            with ServerProcess(config, log, gemini_key=True) as server, Progress() as progress:
                task = progress.add_task(f"STT {stt} on the server", total=len(args.plushes))
                for n in args.plushes:
                    level = run_level(server.address, server.pid, n, questions, stt_on=stt_on, seconds=args.seconds)
                    these.append(await level)
                    progress.advance(task)
            count_not_stored(these, Path(tmp) / f"stt-{stt}" / "plush.db")
            levels.extend(these)
    return {
        "levels": levels,
        "settings": {"models": models.kind, "gemini_ttft_s": args.ttft, "gemini_words_per_s": args.tokens_per_s,
                     "seconds_per_level": args.seconds},
    }  # fmt: skip


def summarize(data: dict[str, Any]) -> str:
    rows, notes = [], []
    for stt in (True, False):
        levels = [level for level in data["levels"] if level["stt_on_server"] is stt]
        if not levels:
            continue
        base = levels[0]
        for level in levels:
            rows.append([
                "on" if stt else "off", level["plushes"], level["answered"], f"{level['turns_per_min']:.0f}",
                fmt_ms(level["first_audio_median"]), fmt_ms(level["first_audio_p99"]),
                f"{fmt_ms(level['stt_median'])} / {fmt_ms(level['stt_p99'])}" if stt else "",
                f"{fmt_ms(level['llm_first_token_median'])} / {fmt_ms(level['llm_first_token_p99'])}",
                f"{fmt_ms(level['rest_median'])} / {fmt_ms(level['rest_p99'])}",
                f"{level['server_cpu_mean']:.0f}%", f"{level['server_rss_mb_max']:.0f} MB",
                f"{level['bench_cpu_mean']:.0f}%", level["refused"], level["errors"], level.get("not_stored", ""),
            ])  # fmt: skip
        doubled = next((lv for lv in levels if lv["first_audio_p99"] >= 2 * base["first_audio_p99"]), None)
        if doubled is None:
            notes.append(f"STT {'on' if stt else 'off'}: p99 did not double up to N = {levels[-1]['plushes']}.")
        else:
            grew = {
                name: doubled[f"{key}_p99"] - base[f"{key}_p99"]
                for key, name in (("stt", "STT"), ("llm_first_token", "LLM first token"), ("rest", "chunker+Piper"))
                if doubled[f"{key}_p99"] == doubled[f"{key}_p99"]  # not nan
            }
            worst = max(grew, key=lambda k: grew[k])
            notes.append(
                f"STT {'on' if stt else 'off'}: p99 first audio doubles at N = {doubled['plushes']} "
                f"({fmt_ms(base['first_audio_p99'])} -> {fmt_ms(doubled['first_audio_p99'])}); the stage that grew "
                f"most: {worst} (+{grew[worst]:.0f} ms at p99)."
            )
    header = ["STT on server", "N", "turns", "turns/min", "first audio median", "p99", "STT tail med / p99",
              "LLM first token med / p99", "rest med / p99", "server CPU", "server RSS max", "bench CPU",
              "refused", "errors", "not stored"]  # fmt: skip
    return markdown_table(header, rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def plot(data: dict[str, Any], path: Path) -> None:
    plt = plot_setup()
    fig, ax = plt.subplots(figsize=(7, 4))
    for stt, style in ((True, "-o"), (False, "--s")):
        levels = [lv for lv in data["levels"] if lv["stt_on_server"] is stt]
        if levels:
            ns = [lv["plushes"] for lv in levels]
            label = f"STT on server {'on' if stt else 'off'}"
            ax.plot(ns, [lv["first_audio_median"] for lv in levels], style, color="C0", label=f"{label}: median")
            ax.plot(ns, [lv["first_audio_p99"] for lv in levels], style, color="C3", label=f"{label}: p99")
    ax.set_xscale("log", base=2)
    if any(lv["first_audio_median"] > 0 for lv in data["levels"]):
        ax.set_yscale("log")
    ax.set_xlabel("plushes talking at once (N)")
    ax.set_ylabel("release -> first audio chunk (ms)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plushes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="N per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each level (default 60)")
    parser.add_argument("--stt", nargs="+", choices=("on", "off"), default=["on", "off"], help="server-side STT")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="a soak: one level this long (see soak)")
    parser.add_argument("--ttft", type=float, default=0.4, help="fake Gemini's time to first token, s")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="fake Gemini's words a second")
    add_run_options(
        parser,
        quick="tiny models, STT on, N = 1 and 2 for 4 s",
        name="",
        name_help="base name of the result files (default load or soak)",
    )
    args = parser.parse_args()
    if args.quick:
        args.models, args.plushes, args.seconds, args.stt = "tiny", [1, 2], 4.0, ["on"]
    soak = args.soak_minutes > 0
    if soak:
        args.seconds, args.plushes, args.stt = args.soak_minutes * 60, args.plushes[:1], args.stt[:1]
    args.name = args.name or ("soak" if soak else "load")
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging("WARNING")
    data = asyncio.run(measure(args))
    from soak import soak_report

    report = soak_report(data) if soak else summarize(data)
    _, md_path = write_results(args.name, data, report, args.out)
    plots = PLOTS if args.out == RESULTS else args.out
    if soak:
        from soak import plot_memory

        plot_memory(data, plots / f"{args.name}.png")
    else:
        plot(data, plots / f"{args.name}.png")
    print(report)
    print(f"\nwritten: {md_path}")


if __name__ == "__main__":
    main()
