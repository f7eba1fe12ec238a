"""Voice to voice: button release -> first audio *played*, measured end to end on whole turns.

A real `plush server` (its own process, on 127.0.0.1) and the real device runtime (`Plush.run`): the button is
the simulated paw board on a pseudo-terminal (debounced as on the board), the microphone a headless PulseAudio
source fed the spoken question in real time, the reply played through sounddevice to the speaker sink, and the
first audio played is found on that sink's monitor (bench/audio_rig.py). Variants, alternated turn by turn so
a busy machine slows them alike:

- brain: the fake Gemini with a configured time to first token and word rate (default 0.4 s, 25 words/s), and
  the local llama at Qwen2.5-0.5B's dimensions (random weights, Q4_0; see harness.qwen_sized_llama);
- the plush's Whisper base (real weights) with each `stt.encoder_window` ("full", "fit"), streaming STT on;
- the reply as PCM and as Opus;
- the naive pipeline on the same button, microphone, server and speaker: record everything, transcribe after
  release, wait for the whole reply, synthesize it all, play;
- speculation on and off (`[device] speculate`: the plush sends its settled text while the button is held and the
  server starts the brain on it), each release delay after the last word (`--release-after 0.2 0.5 1.0`), and
  with `--spoke-on` a question that goes on after a pause (0.7 s of silence, then "And what about you?"): the
  speculation on its first part must be dropped. Each variant is its own plush (device id), so the server's turn
  log says what each spent: Gemini requests per turn and the wasted ones are read from it after the run.

Stages come from the plush's own states and texts and the server's stage timings; "overhead" is what is left
of end to end once the models' own time is taken out (see bench/README.md for the exact definitions).

    .venv/bin/python bench/latency.py                      # ~20 min: 10 turns of each of 12 variants
    .venv/bin/python bench/latency.py --turns 3 --llm gemini --window fit
    .venv/bin/python bench/latency.py --quick              # tiny models, 1 turn each: a smoke run
    .venv/bin/python bench/latency.py --llm gemini --window fit --kinds pcm --speculation on off \
        --release-after 0.2 0.5 1.0 --spoke-on --no-naive --name latency_speculation    # speculation's table
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audio_rig import NaivePlush, Rig, TracedPlush, Variant
from harness import (
    GEMINI_REPLY,
    PLOTS,
    RESULTS,
    WHISPER_RATE,
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

from plush.config import PlushConfig, load_config
from plush.device.client import CompanionClient
from plush.device.controls import ButtonEvent
from plush.device.runtime import State
from plush.device.session import load_device_stt
from plush.logs import setup_logging
from plush.server.sentence_chunker import SentenceChunker
from plush.voice_models.tts import Synthesizer

STAGES = ("button", "mic_close", "stt_tail", "to_server_and_back", "server_first_audio", "playout")
STAGE_NAMES = {
    "button": "button (debounce + serial)",
    "mic_close": "microphone closed",
    "stt_tail": "STT after release",
    "to_server_and_back": "gRPC turn open + transcript echo",
    "server_first_audio": "server: turn start -> first audio chunk",
    "playout": "first chunk received -> played",
}


SPOKE_ON = "And what about you?"
"""What the owner adds after a pause in the spoke-on case."""
SPOKE_ON_PAUSE_S = 0.7
"""The pause before it: longer than the VAD's `min_silence_ms`, so the first part settles and is speculated on."""


def variants(args: argparse.Namespace) -> Iterator[tuple[str, str, str, str, float, bool]]:
    """(llm, window, kind, speculation, release delay, spoke on) for each variant; kind is "pcm", "opus" or
    "naive" (once per brain and window: the naive pipeline neither speculates nor cares when it is released)."""
    for llm in args.llm:
        for window in args.window:
            for kind in args.kinds:
                for spec in args.speculation:
                    yield from ((llm, window, kind, spec, r, False) for r in args.release_after)
                    if args.spoke_on:
                        yield llm, window, kind, spec, args.release_after[len(args.release_after) // 2], True
            if not args.no_naive:
                yield llm, window, "naive", "off", args.release_after[0], False


def variant_name(variant: tuple[str, str, str, str, float, bool], args: argparse.Namespace) -> str:
    """brain/window/audio, then speculation and release delay where more than one is measured, and the case."""
    llm, window, kind, spec, release, spoke_on = variant
    if kind == "naive":
        return f"{llm}/{window}/naive"
    name = f"{llm}/{window}/{kind}"
    name += f"/spec-{spec}" if len(args.speculation) > 1 else ""
    name += f"/r{release:g}" if len(args.release_after) > 1 else ""
    return name + ("/spoke-on" if spoke_on else "")


def device_config(models: Any, window: str, kind: str, language: str, speculate: bool = True) -> PlushConfig:
    return load_config(
        search=False,
        stt={"model": str(models.whisper), "encoder_window": window, "language": language}
        | ({"max_new_tokens": 8} if models.kind == "tiny" else {}),
        device={"id": "bench-plush", "audio_encoding": "opus" if kind == "opus" else "pcm", "speculate": speculate},
    )


def synthesis_ms(voice: Synthesizer, text: str, times: int = 5) -> list[float]:
    """How long Piper takes to speak `text`, `times` over after a warm-up."""
    voice.synthesize(text)
    took = []
    for _ in range(times):
        started = time.perf_counter()
        voice.synthesize(text)
        took.append((time.perf_counter() - started) * 1000)
    return took


def with_follow_up(models: Any, questions: list[bytes]) -> list[bytes]:
    """The spoke-on case: each question, a pause, then `SPOKE_ON`."""
    pause = b"\x00\x00" * int(WHISPER_RATE * (SPOKE_ON_PAUSE_S - 0.25))  # the follow-up has 0.25 s of lead
    follow_up = spoken_questions(models, [SPOKE_ON])[0]
    return [question + pause + follow_up for question in questions]


def gemini_spent(database: Path, device_ids: dict[str, str], turns: int) -> dict[str, dict[str, float]]:
    """Per variant, from the server's turn log (its last `turns` turns: the warm-up ones left out): Gemini
    requests per turn (the speculations' and the turn's own), wasted ones per turn, speculations per turn and
    the share adopted."""
    spent: dict[str, dict[str, float]] = {}
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        for name, device in device_ids.items():
            rows = db.execute(
                "SELECT backend, speculations, speculations_adopted, speculation_gemini_requests, "
                "speculation_gemini_wasted FROM turns WHERE device_id = ? AND source = 'device' "
                "ORDER BY started_at DESC LIMIT ?",
                (device, turns),
            ).fetchall()
            if not rows:
                continue
            requests = sum(r[3] + (r[0] == "gemini" and not r[2]) for r in rows)
            spent[name] = {
                "gemini_per_turn": requests / len(rows),
                "wasted_per_turn": sum(r[4] for r in rows) / len(rows),
                "speculations_per_turn": sum(r[1] for r in rows) / len(rows),
                "adopted_share": sum(r[2] for r in rows) / len(rows),
            }
    return spent


def first_piece_words(reply: str) -> tuple[int, str]:
    """How many streamed words the chunker needs before it lets the first piece go, and that piece."""
    chunker = SentenceChunker()
    words = reply.split(" ")
    for i, word in enumerate(words):
        if pieces := chunker.feed(word if i == 0 else " " + word):
            return i + 1, pieces[0]
    return len(words), reply


def turn_record(name: str, plush: Variant, released: float, played: float, up: float) -> dict[str, Any]:
    """One turn's end to end and stages, in ms."""
    trace, result = plush.trace, plush.trace.result
    thinking, speaking = trace.at(State.THINKING), trace.at(State.SPEAKING)
    stt_tail = result.stt_after_release_ms if result and result.stt_after_release_ms is not None else float("nan")
    timings = result.timings if result else {}
    ms = 1000.0
    record: dict[str, Any] = {
        "variant": name,
        "end_to_end": (played - released) * ms,
        "button": (up - released) * ms,
        "mic_close": (thinking - up) * ms,
        "stt_tail": stt_tail,
        "heard": (trace.heard_at - thinking) * ms,
        "first_text": (trace.first_text_at - trace.heard_at) * ms,
        "first_chunk": (speaking - trace.heard_at) * ms,
        "playout": (played - speaking) * ms,
        "server_first_audio": timings.get("first_audio", float("nan")),
        "llm_first_token": timings.get("llm_first_token", float("nan")),
        "transcript": trace.heard,
        "reply": result.reply if result else "",
        "errors": result.errors if result else ["no result"],
    }
    record["to_server_and_back"] = record["heard"] - stt_tail
    return record


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    models = load_models(
        args.models, llama="llama" in args.llm, tiny_dir=args.out / ".tiny-models", llama_weights=args.llama_weights
    )
    questions = spoken_questions(models)
    spoke_on_questions = with_follow_up(models, questions)
    voice = Synthesizer(models.voice)
    n_words, first_piece = first_piece_words(GEMINI_REPLY)
    piper_first = synthesis_ms(voice, first_piece)
    turns: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plush-bench-")))
        gemini = stack.enter_context(PacedGemini(GEMINI_REPLY, args.ttft, args.tokens_per_s))
        addresses, databases = {}, {}
        for llm in args.llm:
            databases[llm] = tmp / llm / "plush.db"
            config_path = server_config(tmp / llm, models, llm=llm, gemini_url=gemini.base_url)
            server = ServerProcess(config_path, args.out / f"{args.name}-server-{llm}.log", gemini_key=llm == "gemini")
            addresses[llm] = stack.enter_context(server).address
        async with contextlib.AsyncExitStack() as astack, Rig() as rig:
            stt = {w: load_device_stt(device_config(models, w, "pcm", args.language)) for w in args.window}
            plushes: dict[str, Variant] = {}
            how: dict[str, tuple[float, bool]] = {}
            devices: dict[str, dict[str, str]] = {llm: {} for llm in args.llm}
            for i, variant in enumerate(variants(args)):
                llm, window, kind, spec, release, spoke_on = variant
                transcriber, streaming = stt[window]
                assert transcriber is not None
                name = variant_name(variant, args)
                devices[llm][name] = device = f"bench-plush-{i}"  # each variant's turns apart in the turn log
                client = await astack.enter_async_context(CompanionClient(addresses[llm], device))
                how[name] = (release, spoke_on)
                if kind == "naive":
                    plushes[name] = NaivePlush(client, transcriber, voice)
                else:
                    config = device_config(models, window, kind, args.language, speculate=spec == "on")
                    plushes[name] = TracedPlush(
                        config.device, client, transcriber, streaming=streaming, lights=rig.paw.show
                    )
                rig.add(name, plushes[name])
            total = (args.turns + args.warm_up) * len(plushes)
            with Progress() as progress:
                task = progress.add_task("turns", total=total)
                for turn in range(args.warm_up + args.turns):  # warm-up rounds first, uncounted
                    for name, plush in plushes.items():
                        release, spoke_on = how[name]
                        question = (spoke_on_questions if spoke_on else questions)[turn % len(questions)]
                        released, played = await rig.speak(name, plush, question, release)
                        await asyncio.wait_for(plush.trace.done.wait(), 120)
                        await rig.wait_state(plush, State.IDLE, released, 30)
                        if turn >= args.warm_up:
                            up = rig.relay.reached(ButtonEvent.UP, released)
                            turns.append(turn_record(name, plush, released, played, up))
                        progress.advance(task)
                        await asyncio.sleep(0.3)
        spent = {}
        for llm, database in databases.items():
            spent.update(gemini_spent(database, devices[llm], args.turns))
    return {
        "turns": turns,
        "spent": spent,
        "settings": {
            "models": models.kind,
            "gemini_ttft_s": args.ttft,
            "gemini_words_per_s": args.tokens_per_s,
            "gemini_reply": GEMINI_REPLY,
            "first_piece": first_piece,
            "first_piece_words": n_words,
            "piper_first_piece_ms": median(piper_first),
            "release_after_s": args.release_after,
            "spoke_on": f"{SPOKE_ON_PAUSE_S:g} s pause, then {SPOKE_ON!r}",
            "language": args.language,
        },
    }


def summarize(data: dict[str, Any]) -> str:
    """The report: end to end per variant, stages, overhead, and the naive pipeline's ratio."""
    settings = data["settings"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in data["turns"]:
        by_variant.setdefault(record["variant"], []).append(record)
    gen_wait = (settings["first_piece_words"] - 1) / settings["gemini_words_per_s"] * 1000
    rows, stage_rows = [], []
    spent = data.get("spent", {})
    for name, records in by_variant.items():
        llm, window, kind = name.split("/")[:3]
        e2e = [r["end_to_end"] for r in records]
        naive = [r["end_to_end"] for r in by_variant.get(f"{llm}/{window}/naive", [])]
        cost = spent.get(name, {})
        ratio = f"{median(naive) / median(e2e):.1f}x" if naive and kind != "naive" else ""
        outside = [r["end_to_end"] - r["stt_tail"] - r["server_first_audio"] for r in records]
        overhead = [
            r["end_to_end"] - r["stt_tail"] - r["llm_first_token"] - gen_wait - settings["piper_first_piece_ms"]
            for r in records
        ]
        is_plush = kind != "naive"
        rows.append([
            name, len(records), fmt_ms(median(e2e)), fmt_ms(percentile(e2e, 95)), ratio,
            fmt_ms(median(outside)) if is_plush else "",
            fmt_ms(median(overhead)) if is_plush and llm == "gemini" else "",
            f"{cost['gemini_per_turn']:.2f}" if cost and llm == "gemini" else "",
            f"{cost['wasted_per_turn']:.2f}" if cost and llm == "gemini" else "",
            f"{cost['speculations_per_turn']:.1f} / {cost['adopted_share']:.0%}" if cost else "",
            sum(1 for r in records if r["errors"]),
        ])  # fmt: skip
        if is_plush:
            stage_rows.append([name, *(fmt_ms(median([r[s] for r in records])) for s in STAGES)])
    header = ["variant (brain/window/audio[/speculation/release after/case])", "turns", "median", "p95",
              "naive / this", "outside models", "overhead", "Gemini req/turn", "wasted/turn",
              "speculations/turn, adopted", "errors"]  # fmt: skip
    text = markdown_table(header, rows)
    if spent:
        wasted = [c["wasted_per_turn"] for n, c in spent.items() if n.startswith("gemini/")]
        if wasted:
            text += f"\n\nWasted Gemini requests over the whole mix: {sum(wasted) / len(wasted):.2f} per turn."
    text += "\n\nStages (medians; they add up to about the end to end):\n\n"
    text += markdown_table(["variant", *(STAGE_NAMES[s] for s in STAGES)], stage_rows)
    text += (
        f"\n\nGemini: first word after {settings['gemini_ttft_s']:g} s, then {settings['gemini_words_per_s']:g} "
        f"words/s; the chunker lets the first piece ({settings['first_piece']!r}) go after "
        f"{settings['first_piece_words']} words ({gen_wait:.0f} ms of generation after the first); Piper "
        f"speaks it in {settings['piper_first_piece_ms']:.0f} ms (median of 5, measured before the run)."
    )
    return text


def plot(data: dict[str, Any], path: Path) -> None:
    """Stacked medians of the stages per Plush variant, and the naive pipeline's end to end beside them."""
    plt = plot_setup()
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in data["turns"]:
        by_variant.setdefault(record["variant"], []).append(record)
    names = list(by_variant)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    for y, name in enumerate(names):
        records = by_variant[name]
        if name.endswith("/naive"):
            ax.barh(y, median([r["end_to_end"] for r in records]), color="0.6")
            continue
        left = 0.0
        for i, stage in enumerate(STAGES):
            width = max(0.0, median([r[stage] for r in records]))
            ax.barh(y, width, left=left, color=f"C{i}", label=STAGE_NAMES[stage] if y == 0 else None)
            left += width
        ax.plot([percentile([r["end_to_end"] for r in records], 95)], [y], "k|", markersize=12)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("button release -> first audio played (ms); | = p95, grey = naive pipeline")
    ax.legend(fontsize=7, loc="lower right")
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10, help="measured turns per variant (default 10)")
    parser.add_argument("--llm", nargs="+", choices=("gemini", "llama"), default=["gemini", "llama"])
    parser.add_argument(
        "--llama-weights",
        default=None,
        help="a real GGUF from the registry for the llama variants (e.g. qwen2.5-coder-0.5b-instruct-q4_k_m); "
        "default: random weights at Qwen 0.5B's dimensions",
    )
    parser.add_argument("--window", nargs="+", choices=("full", "fit"), default=["full", "fit"])
    parser.add_argument("--warm-up", type=int, default=1, help="uncounted rounds of every variant first (default 1)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pipeline")
    parser.add_argument("--ttft", type=float, default=0.4, help="fake Gemini's time to first token, s")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="fake Gemini's words a second")
    parser.add_argument(
        "--release-after",
        type=float,
        nargs="+",
        default=[0.2],
        help="release this long after the question, s (one variant each; default 0.2)",
    )
    parser.add_argument("--kinds", nargs="+", choices=("pcm", "opus"), default=["pcm", "opus"])
    parser.add_argument(
        "--speculation",
        nargs="+",
        choices=("on", "off"),
        default=["on"],
        help="the plush's [device] speculate (one variant each; default on, as plushes ship)",
    )
    parser.add_argument(
        "--spoke-on",
        action="store_true",
        help="add a variant whose owner goes on after a pause (per speculation setting)",
    )
    parser.add_argument("--language", default="auto", help='the plush\'s [stt] language (default "auto")')
    add_run_options(parser, quick="tiny models, Gemini only, 1 turn", name="latency")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.models, args.turns, args.warm_up, args.llm, args.window = "tiny", 1, 0, ["gemini"], ["fit"]
    setup_logging("WARNING")
    data = asyncio.run(measure(args))
    report = summarize(data)
    _, md_path = write_results(args.name, data, report, args.out)
    plot(data, (PLOTS if args.out == RESULTS else args.out) / f"{args.name}.png")
    print(report)
    print(f"\nwritten: {md_path}")


if __name__ == "__main__":
    main()
