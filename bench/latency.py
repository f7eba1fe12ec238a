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
  release, wait for the whole reply, synthesize it all, play.

Stages come from the plush's own states and texts and the server's stage timings; "overhead" is what is left
of end to end once the models' own time is taken out (see bench/README.md for the exact definitions).

    .venv/bin/python bench/latency.py                      # ~20 min: 10 turns of each of 12 variants
    .venv/bin/python bench/latency.py --turns 3 --llm gemini --window fit
    .venv/bin/python bench/latency.py --quick              # tiny models, 1 turn each: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


def variants(llms: list[str], windows: list[str], naive: bool) -> Iterator[tuple[str, str, str]]:
    """(llm, window, kind) for each variant; kind is "pcm", "opus" or "naive"."""
    for llm in llms:
        for window in windows:
            yield from ((llm, window, kind) for kind in ("pcm", "opus", *(("naive",) if naive else ())))


def device_config(models: Any, window: str, kind: str, language: str) -> PlushConfig:
    return load_config(
        search=False,
        stt={"model": str(models.whisper), "encoder_window": window, "language": language}
        | ({"max_new_tokens": 8} if models.kind == "tiny" else {}),
        device={"id": "bench-plush", "audio_encoding": "opus" if kind == "opus" else "pcm"},
    )


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
    models = load_models(args.models, llama="llama" in args.llm, tiny_dir=args.out / ".tiny-models")
    questions = spoken_questions(models)
    voice = Synthesizer(models.voice)
    n_words, first_piece = first_piece_words(GEMINI_REPLY)
    voice.synthesize(first_piece)  # warm-up
    piper_first = []
    for _ in range(5):
        started = time.perf_counter()
        voice.synthesize(first_piece)
        piper_first.append((time.perf_counter() - started) * 1000)
    turns: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plush-bench-")))
        gemini = stack.enter_context(PacedGemini(GEMINI_REPLY, args.ttft, args.tokens_per_s))
        addresses = {}
        for llm in args.llm:
            config_path = server_config(tmp / llm, models, llm=llm, gemini_url=gemini.base_url)
            server = ServerProcess(config_path, args.out / f"{args.name}-server-{llm}.log", gemini_key=llm == "gemini")
            addresses[llm] = stack.enter_context(server).address
        async with contextlib.AsyncExitStack() as astack, Rig() as rig:
            clients = {
                llm: await astack.enter_async_context(CompanionClient(address, "bench-plush"))
                for llm, address in addresses.items()
            }
            stt = {w: load_device_stt(device_config(models, w, "pcm", args.language)) for w in args.window}
            plushes: dict[str, Variant] = {}
            for llm, window, kind in variants(args.llm, args.window, not args.no_naive):
                transcriber, streaming = stt[window]
                assert transcriber is not None
                name = f"{llm}/{window}/{kind}"
                if kind == "naive":
                    plushes[name] = NaivePlush(clients[llm], transcriber, voice)
                else:
                    config = device_config(models, window, kind, args.language)
                    plushes[name] = TracedPlush(
                        config.device, clients[llm], transcriber, streaming=streaming, lights=rig.paw.show
                    )
                rig.add(name, plushes[name])
            total = (args.turns + args.warm_up) * len(plushes)
            with Progress() as progress:
                task = progress.add_task("turns", total=total)
                for turn in range(args.warm_up + args.turns):  # warm-up rounds first, uncounted
                    for name, plush in plushes.items():
                        question = questions[turn % len(questions)]
                        released, played = await rig.speak(name, plush, question, args.release_after)
                        await asyncio.wait_for(plush.trace.done.wait(), 120)
                        await rig.wait_state(plush, State.IDLE, released, 30)
                        if turn >= args.warm_up:
                            up = rig.relay.reached(ButtonEvent.UP, released)
                            turns.append(turn_record(name, plush, released, played, up))
                        progress.advance(task)
                        await asyncio.sleep(0.3)
    return {
        "turns": turns,
        "settings": {
            "models": models.kind,
            "gemini_ttft_s": args.ttft,
            "gemini_words_per_s": args.tokens_per_s,
            "gemini_reply": GEMINI_REPLY,
            "first_piece": first_piece,
            "first_piece_words": n_words,
            "piper_first_piece_ms": median(piper_first),
            "release_after_s": args.release_after,
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
    for name, records in by_variant.items():
        llm, window, kind = name.split("/")
        e2e = [r["end_to_end"] for r in records]
        naive = [r["end_to_end"] for r in by_variant.get(f"{llm}/{window}/naive", [])]
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
            sum(1 for r in records if r["errors"]),
        ])  # fmt: skip
        if is_plush:
            stage_rows.append([name, *(fmt_ms(median([r[s] for r in records])) for s in STAGES)])
    header = ["variant (brain/window/audio)", "turns", "median", "p95", "naive / this", "outside models",
              "overhead", "errors"]  # fmt: skip
    text = markdown_table(header, rows)
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
    parser.add_argument("--window", nargs="+", choices=("full", "fit"), default=["full", "fit"])
    parser.add_argument("--warm-up", type=int, default=1, help="uncounted rounds of every variant first (default 1)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pipeline")
    parser.add_argument("--ttft", type=float, default=0.4, help="fake Gemini's time to first token, s")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="fake Gemini's words a second")
    parser.add_argument("--release-after", type=float, default=0.2, help="release this long after the question")
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
