"""What the brain adds to time-to-first-token, and what the cached persona prefix saves the local Llama.

Part 1, overhead: the same backend is asked for a reply directly (`backend.stream(prompt)`) and through the
whole brain (`Companion.reply`: persona, memory window, facts, full-text recall, Gemini budget with its SQLite
day counter, router, turn log), alternating, in one run. Two backends: an in-process one that answers at once
(isolates our overhead from any network) and the real google-genai client against the fake Gemini server on
127.0.0.1. The store holds a realistic memory (hundreds of turns, a few dozen facts). Target: under 5 ms at the
median.

Part 2, prefix cache: a llama-architecture GGUF at real dimensions with random weights (default: Qwen2.5-0.5B's
hidden size, layers and heads, quantized to Q4_0; compute cost is the real model's) answers a ~300-token persona
prompt cold (KV cache cleared before each turn) and warm (the persona evaluated once, as the server's warm-up
does, then every turn a new message), alternating.

Part 3, process boundary: the server runs the local model in a worker process (a crash costs one turn); the same
GGUF answers in this process and through that worker, alternating (tiny model: the boundary alone; real size:
what a turn pays). Target: under 5 ms added.

Part 4, the AMX workaround's cost: the model loaded with llama.cpp's extra buffer types on and off (prompt and
generation tokens/s); on a CPU without AMX this is the repacked weights the workaround also gives up.

    .venv/bin/python bench/brain_overhead.py            # all parts (parts 2-4 build a ~200 MB model first)
    .venv/bin/python bench/brain_overhead.py --quick    # tiny model, fewer turns: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fakes.gemini import FakeGemini  # noqa: E402
from tiny_models import build_gguf  # noqa: E402

from plush.config import GeminiConfig, LlamaConfig, MemoryConfig  # noqa: E402
from plush.logs import setup_logging  # noqa: E402
from plush.server.companion import Companion, TurnRequestData  # noqa: E402
from plush.server.llm.base import LlmBackend, Prompt, Usage  # noqa: E402
from plush.server.llm.gemini import GeminiBackend  # noqa: E402
from plush.server.llm.gemini_budget import GeminiBudget  # noqa: E402
from plush.server.llm.llama import LlamaBackend  # noqa: E402
from plush.server.llm.llama_process import LlamaProcess  # noqa: E402
from plush.server.llm.router import LlmRouter  # noqa: E402
from plush.server.memory import Memory  # noqa: E402
from plush.server.persona import PersonaSource  # noqa: E402
from plush.server.store import Store, TurnRecord  # noqa: E402

QWEN_05B = {"n_embd": 896, "n_layer": 24, "n_head": 14, "n_head_kv": 2, "n_ff": 4864, "n_ctx": 2048}
QUESTIONS = ("Do you remember my rabbit?", "What shall we play today?", "Tell me about the moon.", "I'm sleepy.")


class InstantBackend(LlmBackend):
    """Answers at once, in-process: what is left of time-to-first-token is the brain's own overhead."""

    name = "instant"

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        yield "Hello there! "
        yield "Let's play."


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:8.2f} ms (p90 {sorted(seconds)[int(len(seconds) * 0.9)] * 1000:.2f})"


async def first_delta(stream: AsyncGenerator[str]) -> float:
    """Time to the first delta; the rest is read outside the measurement, as a turn would."""
    started = time.perf_counter()
    await anext(stream)
    elapsed = time.perf_counter() - started
    async for _ in stream:
        pass
    return elapsed


async def fill_memory(store: Store, turns: int, facts: int) -> None:
    for i in range(turns):
        text = f"Turn {i}: I played with my rabbit and my bear and we sang song number {i}."
        await store.add_turn(TurnRecord(f"old{i}", "device:bench", "bench", "device", text, "That sounds fun!"))
    for i in range(facts):
        fact = f"Fact {i}: the owner's favourite thing number {i} is a colour"
        await store.add_fact(fact, source="bench", owner="device:bench")


async def alternate(
    runs: int, a: Callable[[int], Awaitable[float]], b: Callable[[int], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Run a and b in turns (ABAB...), after two warm-up rounds, so drift on a noisy machine hits both alike."""
    for i in range(2):
        await a(i)
        await b(i)
    times_a, times_b = [], []
    for i in range(runs):
        times_a.append(await a(i))
        times_b.append(await b(i))
    return times_a, times_b


async def overhead(backend: LlmBackend, store: Store, runs: int) -> tuple[list[float], list[float]]:
    persona = PersonaSource("en")
    budget = GeminiBudget(GeminiConfig(requests_per_minute=0, requests_per_day=0, tokens_per_minute=0), store)
    router = LlmRouter(backend, None, no_primary_reason="", budget=budget)
    companion = Companion(persona=persona, router=router, memory=Memory(store, MemoryConfig()), speech=None)

    async def direct(i: int) -> float:
        # The very prompt the brain would send (built outside the measurement), so both calls carry the same bytes.
        prompt = await companion.prompt_for("device:bench", QUESTIONS[i % len(QUESTIONS)], owner="device:bench")
        return await first_delta(backend.stream(prompt))

    async def brain(i: int) -> float:
        turn = TurnRequestData(f"t{i}-{time.time_ns()}", "device:bench", "bench", "device", QUESTIONS[i % 4])
        turn.want_audio = False
        started = time.perf_counter()
        replies = companion.reply(turn)
        async for event in replies:
            if event.WhichOneof("kind") == "text_delta":
                elapsed = time.perf_counter() - started
                break
        async for _ in replies:  # let the turn finish and be stored, outside the measurement
            pass
        return elapsed

    return await alternate(runs, direct, brain)


async def part_one(runs: int) -> None:
    print(f"== brain overhead on time-to-first-token ({runs} turns each, alternating) ==")
    with tempfile.TemporaryDirectory() as tmp, FakeGemini() as fake:
        fake.set_default_reply("Hello there! ", "Let's play.")
        async with await Store.open(Path(tmp) / "bench.db") as store:
            await fill_memory(store, turns=500, facts=30)
            gemini = GeminiBackend("bench-key", GeminiConfig(base_url=fake.base_url))
            for label, backend in (("in-process backend", InstantBackend()), ("google-genai + fake Gemini", gemini)):
                direct, brain = await overhead(backend, store, runs)
                added = statistics.median(brain) - statistics.median(direct)
                print(f"{label}:")
                print(f"  direct         {ms(direct)}")
                print(f"  through brain  {ms(brain)}")
                print(f"  added          {added * 1000:8.2f} ms at the median (target < 5 ms)")
            await gemini.aclose()


def build_model(tmp: str, dims: dict[str, int]) -> Path:
    """The benchmark's GGUF: `dims` (Qwen2.5-0.5B's by default) with random weights, quantized to Q4_0."""
    from llama_cpp import llama_model_quantize, llama_model_quantize_default_params

    started = time.perf_counter()
    Path(tmp).mkdir(exist_ok=True)
    f32 = build_gguf(Path(tmp) / "f32.gguf", dims)
    q4 = Path(tmp) / "q4_0.gguf"
    params = llama_model_quantize_default_params()
    params.ftype = 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    if llama_model_quantize(str(f32).encode(), str(q4).encode(), params) != 0:
        raise SystemExit("quantizing the benchmark model failed")
    f32.unlink()
    size_mb, took = q4.stat().st_size / 1e6, time.perf_counter() - started
    print(f"model: {dims or 'tiny'} Q4_0, {size_mb:.0f} MB, built in {took:.0f} s")
    return q4


def persona_of(llm: Any, persona_tokens: int) -> str:
    """The built-in persona's prompt, repeated or cut to `persona_tokens` tokens of this model."""
    base = PersonaSource("en").current().system_prompt
    tokens = llm.tokenize(base.encode(), add_bos=False)
    while len(tokens) < persona_tokens:
        tokens += tokens
    return str(llm.detokenize(tokens[:persona_tokens]).decode(errors="ignore"))


def part_two(model: Path, runs: int, persona_tokens: int) -> None:
    print(f"\n== llama time-to-first-token, ~{persona_tokens}-token persona, cold vs cached prefix ==")
    backend = LlamaBackend(model, LlamaConfig(n_ctx=2048, max_tokens=1, max_queue=0))
    llm = backend._llm  # the benchmark needs the tokenizer and the KV cache reset
    system = persona_of(llm, persona_tokens)
    print(f"persona prompt: {len(llm.tokenize(system.encode(), add_bos=False))} tokens")

    async def cold(i: int) -> float:
        llm.reset()
        return await first_delta(backend.stream(Prompt(system, (), QUESTIONS[i % len(QUESTIONS)])))

    async def warm(i: int) -> float:
        backend.warm_up(system)  # what the server does at start; a no-op cost-wise once cached
        return await first_delta(backend.stream(Prompt(system, (), QUESTIONS[i % len(QUESTIONS)])))

    cold_s, warm_s = asyncio.run(alternate(runs, cold, warm))
    print(f"  cold (no cache)        {ms(cold_s)}")
    print(f"  persona prefix cached  {ms(warm_s)}")
    print(f"  ratio cold / cached    {statistics.median(cold_s) / statistics.median(warm_s):8.1f}x")


def part_three(model: Path, runs: int, persona_tokens: int, label: str) -> None:
    """The worker process's boundary: the same model in this process and in the server's worker, alternating.

    On the tiny model the model's own time is a few milliseconds, so what the boundary adds shows; on the
    real-size one it is within the noise of ~100 ms of compute.
    """
    print(f"\n== the local brain's process boundary, {label}, time-to-first-token, persona cached ({runs} turns) ==")
    config = LlamaConfig(n_ctx=2048, max_tokens=8, max_queue=0, temperature=0.0)
    inline = LlamaBackend(model, config)
    system = persona_of(inline._llm, persona_tokens)

    async def run() -> tuple[list[float], list[float]]:
        worker = LlamaProcess(model, config)
        await worker.start(system)
        inline.warm_up(system)
        try:

            async def here(i: int) -> float:
                return await first_delta(inline.stream(Prompt(system, (), QUESTIONS[i % len(QUESTIONS)])))

            async def there(i: int) -> float:
                return await first_delta(worker.stream(Prompt(system, (), QUESTIONS[i % len(QUESTIONS)])))

            return await alternate(runs, here, there)
        finally:
            await worker.aclose()

    here_s, there_s = asyncio.run(run())
    print(f"  in this process        {ms(here_s)}")
    print(f"  worker process         {ms(there_s)}")
    added = statistics.median(there_s) - statistics.median(here_s)
    print(f"  added by the boundary  {added * 1000:8.2f} ms at the median (target < 5 ms)")


def part_four(model: Path, runs: int, persona_tokens: int) -> None:
    """What loading without llama.cpp's extra buffer types (the AMX workaround) costs on this CPU.

    On a CPU without AMX the extra buffers hold repacked Q4 weights (AVX2/AVX-512 kernels); the workaround turns
    those off too, so this is what an AMX machine gives up besides AMX itself (which cannot be measured here).
    """
    import llama_cpp

    print(f"\n== extra buffer types on and off: prompt and generation speed ({runs} runs each) ==")
    info = llama_cpp.llama_print_system_info().decode()
    print(f"llama.cpp on this CPU: {info.strip()}")
    loaded = {s: LlamaBackend(model, LlamaConfig(n_ctx=2048, extra_buffers=s))._llm for s in ("on", "off")}
    system = persona_of(loaded["on"], persona_tokens)
    tokens = loaded["on"].tokenize(system.encode(), add_bos=True)
    generate = 64

    def speeds(llm: Any) -> tuple[float, float]:
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens)
        prompt_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(generate):
            llm.eval([int(llm.sample(temp=0.0))])
        return len(tokens) / prompt_s, generate / (time.perf_counter() - started)

    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    speeds(loaded["on"]), speeds(loaded["off"])  # warm-up
    for _ in range(runs):
        for setting, llm in loaded.items():
            results[setting].append(speeds(llm))
    for setting in ("on", "off"):
        prompt = statistics.median(r[0] for r in results[setting])
        gen = statistics.median(r[1] for r in results[setting])
        print(f"  extra buffers {setting:3}: prompt {prompt:7.1f} tokens/s, generation {gen:6.1f} tokens/s")
    on = [statistics.median(r[i] for r in results["on"]) for i in (0, 1)]
    off = [statistics.median(r[i] for r in results["off"]) for i in (0, 1)]
    print(f"  off / on: prompt {off[0] / on[0]:.2f}x, generation {off[1] / on[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="turns per variant in part 1 (default 50)")
    parser.add_argument("--llama-runs", type=int, default=8, help="turns per variant in part 2 (default 8)")
    parser.add_argument("--persona-tokens", type=int, default=300, help="persona prompt length in part 2")
    parser.add_argument("--quick", action="store_true", help="tiny model and few turns: a smoke run")
    parser.add_argument("--skip-llama", action="store_true", help="only part 1")
    args = parser.parse_args()
    setup_logging("WARNING")  # one log line per turn would drown the report
    runs, llama_runs, dims = args.runs, args.llama_runs, QWEN_05B
    if args.quick:
        runs, llama_runs, dims = 10, 3, {}
    asyncio.run(part_one(runs))
    if not args.skip_llama:
        with tempfile.TemporaryDirectory() as tmp:
            model = build_model(tmp, dims)
            part_two(model, llama_runs, args.persona_tokens)
            if dims:
                part_three(build_model(tmp + "/tiny", {}), runs, args.persona_tokens, "tiny model")
            part_three(model, runs, args.persona_tokens, "real-size model" if dims else "tiny model")
            part_four(model, llama_runs, args.persona_tokens)


if __name__ == "__main__":
    main()
