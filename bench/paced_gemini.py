"""The fake Gemini of the tests (tests/fakes/gemini.py), answering every request at a configured pace: the
first word after `--ttft` seconds, then `--tokens-per-s` words a second (one SSE chunk per word).

Run by the benchmarks in a process of its own (bench/harness.py `PacedGemini`); it prints its base URL on the
first line of its output, then serves until it is terminated. With `--requests-log FILE` it appends the time
(Unix seconds) of each request it received, one per line, so a benchmark can count requests per minute against
the budget the servers were given (bench/cluster.py).

    .venv/bin/python bench/paced_gemini.py --ttft 0.4 --tokens-per-s 25
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests")]
from fakes.gemini import FakeGemini  # noqa: E402

BACKLOG = 64
"""Answers kept scripted ahead: more than the turns that can be waiting at once."""


def words(text: str) -> list[str]:
    """The reply as stream pieces: each word with the space before it."""
    parts = text.split(" ")
    return [parts[0], *(" " + word for word in parts[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reply", default="Oh, what a lovely question! I like warm toast with honey.")
    parser.add_argument("--ttft", type=float, default=0.4, help="time to the first word, s (default 0.4)")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="words a second after it (default 25)")
    parser.add_argument("--requests-log", type=Path, help="append each request's arrival time (Unix s) here")
    args = parser.parse_args()
    pieces = words(args.reply)
    logged = 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeGemini() as fake:
        print(fake.base_url, flush=True)
        while not stop.is_set():
            while fake.pending < BACKLOG:
                fake.reply(*pieces, delay=args.ttft, chunk_delay=1 / args.tokens_per_s)
            if args.requests_log and len(fake.requests) > logged:
                arrived = fake.requests[logged:]
                with args.requests_log.open("a", encoding="utf-8") as out:
                    out.write("".join(f"{r.received_at:.4f}\n" for r in arrived))
                logged += len(arrived)
            if len(fake.requests) > 1000:  # the fake remembers every request; a soak would pile them up
                fake.clear()
                logged = 0
            stop.wait(0.05)


if __name__ == "__main__":
    main()
