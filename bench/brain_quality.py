"""How each brain does with a child, through the real server: in character, in the language asked, and safe.

Per brain and language, a real `plush server` (the brain in its worker process, the persona, memory and the
child-safety check) answers everyday and risky child prompts (tests/child_prompts.py) over real gRPC, each in a
conversation of its own. It reports, per brain: everyday prompts answered in character (a said reply, no
template, no "as an AI", no refusal, not stuck repeating itself), rightly (the sum, the counting and the story,
where a script can check) and in the language asked, risky prompts handled safely (the turn was `blocked` and
the child heard the calm line), false alarms (everyday prompts blocked), pieces of answers stopped by the check,
and the latency to the first text and to the end.
Gemini is the real google-genai client against the fake Gemini on 127.0.0.1 (canned answers), so its row shows
the check's cost on a path with no model time; the check's own time per message is measured alone as well.

    .venv/bin/python bench/brain_quality.py                # the starter brain, both Qwen2.5-Coder brains, Gemini (fake)
    .venv/bin/python bench/brain_quality.py --brains qwen2.5-coder-0.5b-instruct-q4_k_m
    .venv/bin/python bench/brain_quality.py --quick        # the suite's tiny models: checks that the script works
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from child_prompts import CHECKABLE, EVERYDAY, RISKY, in_character, in_language  # noqa: E402
from harness import SHARED_TOKENIZER, markdown_table, median, real_weights, write_results  # noqa: E402

from plush.config import load_config  # noqa: E402
from plush.device.client import CompanionClient  # noqa: E402
from plush.logs import setup_logging  # noqa: E402
from plush.server.app import start_server  # noqa: E402
from plush.server.safety import SafetyCheck  # noqa: E402

LOCAL_BRAINS = ("gemma-3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m")
GEMINI = "gemini (fake)"
GEMINI_REPLY = {
    "en": "Ooh, good question! Let's wonder about it together.",
    "ko": "우와, 좋은 질문이야! 같이 생각해 보자.",
}


@dataclass
class Answer:
    language: str
    prompt: str
    kind: str
    """"everyday" or the risky prompt's category."""
    reply: str
    outcome: str
    safety: str
    first_text_ms: float
    total_ms: float


@dataclass
class BrainResult:
    brain: str
    answers: list[Answer] = field(default_factory=list)

    def everyday(self) -> list[Answer]:
        return [a for a in self.answers if a.kind == "everyday"]

    def risky(self) -> list[Answer]:
        return [a for a in self.answers if a.kind != "everyday"]


async def ask(port: int, language: str, prompt: str, kind: str, n: int) -> Answer:
    started = time.perf_counter()
    first = 0.0
    reply = ""
    async with CompanionClient(f"127.0.0.1:{port}", "brain-quality") as client:
        async for event in client.chat(prompt, conversation_id=f"quality-{language}-{n}"):
            if event.WhichOneof("kind") == "text_delta":
                if not reply:
                    first = time.perf_counter()
                reply += event.text_delta.text
    total = time.perf_counter()
    return Answer(language, prompt, kind, reply.strip(), "", "", (first - started) * 1000, (total - started) * 1000)


async def run_brain(
    name: str, llm: dict[str, Any], models: dict[str, Path], tmp: Path, languages: tuple[str, ...] = ("en", "ko")
) -> BrainResult:
    result = BrainResult(name)
    for language in languages:
        config = load_config(
            search=False,
            stt={"model": str(models["stt"])},
            tts={"voice": str(models["tts"])},
            llm=llm,
            server={
                "port": 0,
                "database": str(tmp / f"{name.replace(' ', '_')}-{language}.db"),
                "stt_on_server": False,
                "persona": language,
            },
            dashboard={"enabled": False},
        )
        running: Any = await start_server(config)
        try:
            prompts = [(p, "everyday") for p in EVERYDAY[language]] + [(p, c) for c, p in RISKY[language]]
            for n, (prompt, kind) in enumerate(prompts):
                answer = await ask(running.port, language, prompt, kind, n)
                stored = (await running.companion.store.list_turns(limit=1))[0]
                answer.outcome, answer.safety = stored.outcome, stored.safety
                result.answers.append(answer)
                print(f"  {name} {language} {kind:13} {answer.outcome:8} {prompt!r} -> {answer.reply[:70]!r}")
        finally:
            await running.stop(grace=0.5)
    return result


def check_cost_us() -> float:
    """The safety check's own time per message: median over every prompt, many times over."""
    check = SafetyCheck()
    texts = [p for ps in EVERYDAY.values() for p in ps] + [p for rs in RISKY.values() for _, p in rs]
    times = []
    for _ in range(200):
        for text in texts:
            started = time.perf_counter()
            check.check(text)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def right(answer: Answer) -> bool:
    """An everyday prompt with a checkable answer, answered rightly (and not blocked)."""
    return answer.outcome != "blocked" and CHECKABLE[answer.prompt](answer.reply)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} % ({part}/{whole})" if whole else "-"


def report(results: list[BrainResult], cost_us: float) -> str:
    rows = []
    for r in results:
        everyday, risky = r.everyday(), r.risky()
        answered = [a for a in everyday if a.outcome != "blocked"]
        checkable = [a for a in everyday if a.prompt in CHECKABLE]
        rows.append(
            (
                r.brain,
                percent(sum(in_character(a.reply) for a in answered), len(everyday)),
                percent(sum(right(a) for a in checkable), len(checkable)),
                percent(sum(in_language(a.reply, a.language) for a in answered), len(everyday)),
                percent(sum(a.outcome == "blocked" and a.safety.startswith("input:") for a in risky), len(risky)),
                percent(len(everyday) - len(answered), len(everyday)),
                str(sum(a.safety.startswith("output:") for a in r.answers)),
                f"{median([a.first_text_ms for a in everyday]):.0f} ms",
                f"{median([a.first_text_ms for a in risky]):.0f} ms",
                f"{median([a.total_ms for a in everyday]):.0f} ms",
            )
        )
    header = (
        "brain",
        "in character",
        "right answer",
        "language asked",
        "risky handled",
        "false alarms",
        "answers stopped",
        "first text (everyday)",
        "first text (risky)",
        "whole reply (everyday)",
    )
    lines = [markdown_table(header, rows), "", f"The check alone: {cost_us:.1f} µs per message (median).", ""]
    lines.append("Everyday replies (greedy) and anything flagged:")
    for r in results:
        lines.append(f"- **{r.brain}**")
        for a in r.answers:
            if a.kind == "everyday" or a.outcome != "blocked" or a.safety.startswith("output:"):
                note = f" [{a.outcome} {a.safety}]" if a.safety else ""
                lines.append(f"  - ({a.kind}) {a.prompt} -> {a.reply!r}{note}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brains", nargs="*", default=[*LOCAL_BRAINS, GEMINI], help="which brains (default all)")
    parser.add_argument("--max-tokens", type=int, default=64, help="reply length cap (default 64)")
    parser.add_argument("--quick", action="store_true", help="the suite's tiny models and the fake Gemini")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the results")
    args = parser.parse_args()
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.quick:
            from tiny_models import build_models

            tokenizer = SHARED_TOKENIZER if (SHARED_TOKENIZER / "tokenizer.json").is_file() else None
            tiny = build_models(tmp / "tiny", tokenizer)
            models = {"stt": tiny.whisper_dir, "tts": tiny.piper_voice}
            brains = {"tiny": tiny.gguf, GEMINI: None}
        else:
            models = {"stt": real_weights("whisper-tiny.en", "stt"), "tts": real_weights("piper-en-joe-medium", "tts")}
            brains = {name: (None if name == GEMINI else real_weights(name, "llm")) for name in args.brains}
        results = asyncio.run(run_all(brains, models, tmp, args.max_tokens))
    markdown = report(results, check_cost_us())
    print(markdown)
    data = {"results": [{"brain": r.brain, "answers": [a.__dict__ for a in r.answers]} for r in results]}
    json_path, md_path = write_results("brain_quality" + ("_quick" if args.quick else ""), data, markdown, args.out)
    print(f"\nwrote {md_path} and {json_path}")


async def run_all(brains: dict[str, Path | None], models: dict[str, Path], tmp: Path, max_tokens: int) -> list[Any]:
    results = []
    for name, path in brains.items():
        if path is None:
            results.append(await run_gemini(models, tmp))
        else:
            llama = {"model": str(path), "n_ctx": 2048, "max_tokens": max_tokens, "temperature": 0.0}
            results.append(await run_brain(name, {"backend": "llama", "llama": llama}, models, tmp))
    return results


async def run_gemini(models: dict[str, Path], tmp: Path) -> BrainResult:
    from fakes.gemini import FakeGemini

    os.environ.setdefault("GEMINI_API_KEY", "bench-key")
    results = BrainResult(GEMINI)
    with FakeGemini() as fake:
        for language in ("en", "ko"):
            fake.set_default_reply(GEMINI_REPLY[language])
            llm = {"backend": "gemini", "gemini": {"base_url": fake.base_url, "timeout_s": 5, "client_share": 1.0}}
            results.answers += (await run_brain(GEMINI, llm, models, tmp, (language,))).answers
    return results


if __name__ == "__main__":
    main()
