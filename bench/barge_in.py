"""Barge-in: the button pressed while the plush speaks -> silence at the speaker, measured on the speaker's monitor.

The same table as bench/latency.py (a real `plush server` in its own process, the real device runtime, the
simulated paw board on a pseudo-terminal, a headless PulseAudio; bench/audio_rig.py). Each turn: press, speak
the question, release; once the reply has played for `--speak-for` seconds, press again (the paw's contact
closes at that moment, and is debounced for 25 ms as on the board). The press starts a new turn, as it does
for the owner; it is held for `--hold` seconds of silence and released (nothing is heard, so nothing is asked).
Silence is the last sound at the speaker after the press; the reply (bench/harness.py LONG_REPLY) still has
seconds to play then, so sound after the press is the reply not yet stopped.

    .venv/bin/python bench/barge_in.py                 # 20 barge-ins, PCM and Opus alternating (~5 min)
    .venv/bin/python bench/barge_in.py --quick         # tiny models, 1 each: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from audio_rig import Rig, TracedPlush
from harness import (
    LONG_REPLY,
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
from rich.progress import Progress

from plush.config import load_config
from plush.device.client import CompanionClient
from plush.device.controls import ButtonEvent
from plush.device.runtime import State
from plush.device.session import load_device_stt
from plush.logs import setup_logging


async def barge_in(
    rig: Rig, name: str, plush: TracedPlush, question: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    """One turn interrupted while it speaks; times in ms from the press."""
    released, played = await rig.speak(name, plush, question, 0.2)
    await asyncio.sleep(max(0.0, played + args.speak_for - time.perf_counter()))
    pressed = rig.board.press()
    # Sound in the 150 ms before the press: the reply was playing, not in a pause between two pieces.
    await rig.probe.wait_heard(pressed)
    sounding = rig.probe.last_sound(pressed - 0.15, pressed) is not None
    await asyncio.sleep(args.hold)
    await rig.probe.wait_heard(pressed + args.hold)
    last = rig.probe.last_sound(pressed, pressed + args.hold)
    down = rig.relay.reached(ButtonEvent.DOWN, pressed)
    stopped = next((t for s, t in plush.trace.states if s is State.LISTENING and t >= pressed), 0.0)
    rig.board.release()
    await rig.wait_state(plush, State.IDLE, pressed + args.hold, 60)
    return {
        "variant": name,
        "sounding_at_press": sounding,
        "silence": max(0.0, (last or pressed) - pressed) * 1000,
        "button": (down - pressed) * 1000,
        "listening_again": (stopped - pressed) * 1000 if stopped else float("nan"),
        "release_to_first_audio": (played - released) * 1000,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    models = load_models(args.models, tiny_dir=args.out / ".tiny-models")
    questions = spoken_questions(models)
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plush-barge-")))
        gemini = stack.enter_context(PacedGemini(LONG_REPLY, 0.4, 25.0))
        config_path = server_config(tmp, models, llm="gemini", gemini_url=gemini.base_url)
        log = args.out / f"{args.name}-server.log"
        server = stack.enter_context(ServerProcess(config_path, log, gemini_key=True))
        async with CompanionClient(server.address, "bench-plush") as client, Rig() as rig:
            stt = {"model": str(models.whisper)} | ({"max_new_tokens": 8} if models.kind == "tiny" else {})
            transcriber, streaming = load_device_stt(load_config(search=False, stt=stt))
            plushes = {}
            for encoding in args.encoding:
                device = load_config(search=False, device={"id": "bench-plush", "audio_encoding": encoding}).device
                plushes[encoding] = TracedPlush(device, client, transcriber, streaming=streaming, lights=rig.paw.show)
                rig.add(encoding, plushes[encoding])
            with Progress() as progress:
                task = progress.add_task("barge-ins", total=(args.warm_up + args.turns) * len(plushes))
                for turn in range(args.warm_up + args.turns):  # warm-up rounds first, uncounted
                    for name, plush in plushes.items():
                        record = await barge_in(rig, name, plush, questions[turn % len(questions)], args)
                        if turn >= args.warm_up:
                            records.append(record)
                        progress.advance(task)
                        await asyncio.sleep(0.3)
    settings = {"models": models.kind, "speak_for_s": args.speak_for, "hold_s": args.hold}
    return {"barge_ins": records, "settings": settings}


def summarize(data: dict[str, Any]) -> str:
    rows = []
    for name in dict.fromkeys(r["variant"] for r in data["barge_ins"]):
        every = [r for r in data["barge_ins"] if r["variant"] == name]
        records = [r for r in every if r["sounding_at_press"]] or every
        silence = [r["silence"] for r in records]
        rows.append([
            name, f"{len(records)} of {len(every)}", fmt_ms(median(silence)), fmt_ms(percentile(silence, 95)),
            fmt_ms(max(silence)),
            fmt_ms(median([r["button"] for r in records])), fmt_ms(median([r["listening_again"] for r in records])),
        ])  # fmt: skip
    header = ["reply audio", "barge-ins (reply audible at the press)", "press -> silence median", "p95", "max",
              "of which button (debounce)", "press -> listening again"]  # fmt: skip
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="barge-ins per encoding (default 20)")
    parser.add_argument("--encoding", nargs="+", choices=("pcm", "opus"), default=["pcm", "opus"])
    parser.add_argument("--warm-up", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--speak-for", type=float, default=0.8, help="press this long after the reply starts")
    parser.add_argument("--hold", type=float, default=1.2, help="hold the interrupting press this long")
    add_run_options(parser, quick="tiny models, one PCM barge-in", name="barge_in")
    args = parser.parse_args()
    if args.quick:
        args.models, args.turns, args.warm_up, args.encoding = "tiny", 1, 0, ["pcm"]
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging("WARNING")
    data = asyncio.run(measure(args))
    report = summarize(data)
    _, md_path = write_results(args.name, data, report, args.out)
    print(report)
    print(f"\nwritten: {md_path}")


if __name__ == "__main__":
    main()
