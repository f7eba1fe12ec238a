"""The local Llama backend on real GGUF files: the suite's tiny chat model, and real weights when ../shared has them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import STORIES_GGUF
from tiny_models import TinyModels

from plush.config import LlamaConfig
from plush.server.llm.base import Message, Prompt
from plush.server.llm.llama import LlamaBackend, extra_buffers_wanted

PROMPT = Prompt("You are Plush.", (Message("user", "Hi"), Message("assistant", "Hello!")), "Tell me a story.")


async def collect(backend: LlamaBackend, prompt: Prompt = PROMPT) -> list[str]:
    return [delta async for delta in backend.stream(prompt)]


async def test_tiny_chat_model_streams_deterministic_text(models: TinyModels) -> None:
    backend = LlamaBackend(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=12, temperature=0.0))
    first = await collect(backend)
    assert len(first) > 1 and "".join(first).strip()
    assert await collect(backend) == first


async def test_stopping_early_frees_the_model_for_the_next_turn(models: TinyModels) -> None:
    backend = LlamaBackend(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=200, temperature=0.0))
    stream = backend.stream(PROMPT)
    assert await anext(stream)
    await stream.aclose()  # a cancelled turn
    full = await asyncio.wait_for(collect(backend), timeout=30)
    assert full


@pytest.mark.skipif(not STORIES_GGUF.is_file(), reason="real weights live in ../shared/models (absent here)")
async def test_real_trained_llama_weights_stream_words() -> None:
    backend = LlamaBackend(STORIES_GGUF, LlamaConfig(n_ctx=512, max_tokens=24, temperature=0.0))
    text = "".join(await collect(backend, Prompt("", (), "Once upon a time")))
    words = text.split()
    assert len(words) >= 3
    assert sum(w.strip(".,!?\"'").isalpha() for w in words) >= len(words) // 2  # real words, not byte soup


async def test_every_turn_starts_with_the_persona_tokens_the_warm_up_evaluated(models: TinyModels) -> None:
    """llama.cpp reuses the KV cache for the longest common token prefix: the persona must be that prefix."""
    backend = LlamaBackend(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=4, temperature=0.0))
    system = "You are Plush, a happy bear who likes to play and sing."
    llm = backend._llm

    def evaluated() -> list[int]:
        return [int(t) for t in llm.input_ids[: llm.n_tokens]]

    backend.warm_up(system)
    warm = evaluated()
    await collect(backend, Prompt(system, (), "hello"))
    first = evaluated()
    await collect(backend, Prompt(system, (Message("user", "hello"), Message("assistant", "hi")), "sing a song"))
    second = evaluated()

    persona = len(llm.tokenize(f"<|im_start|>system\n{system}<|im_end|>\n".encode(), special=True))
    assert persona > 10
    for before, after in ((warm, first), (first, second)):
        shared = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), len(before))
        assert shared >= persona, f"only {shared} of the persona's {persona} tokens were shared"


async def test_a_turn_cancelled_while_queued_is_never_evaluated_and_frees_its_place(models: TinyModels) -> None:
    """Barge-in on a turn still waiting for the model: it must not cost a prompt evaluation later."""
    backend = LlamaBackend(models.gguf, LlamaConfig(n_ctx=2048, max_tokens=1500, temperature=0.0, max_queue=1))
    evaluated: list[int] = []
    real_eval = backend._llm.eval

    def counting_eval(tokens: Any) -> Any:
        evaluated.append(len(tokens))
        return real_eval(tokens)

    backend._llm.eval = counting_eval
    first = backend.stream(PROMPT)
    assert await anext(first)  # the model is busy with a long first turn
    queued = backend.stream(Prompt(PROMPT.system, (), "a question that is never asked"))
    waiting = asyncio.ensure_future(anext(queued))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await queued.aclose()
    calls_before = len(evaluated)
    await first.aclose()  # the first turn stops too (within a token)
    full = await asyncio.wait_for(collect(backend), timeout=30)

    assert full
    assert backend._in_flight == 0, "both stopped turns gave their places back"
    prompt_evals = [n for n in evaluated[calls_before:] if n > 1]
    # The last turn asks what the first asked (its prompt is all in the KV cache): any prompt evaluated here
    # would be the cancelled turn's.
    assert prompt_evals == [], f"the cancelled turn's prompt was evaluated: {prompt_evals}"


def test_extra_buffers_are_off_exactly_where_llama_cpp_runs_amx_kernels() -> None:
    import llama_cpp

    here = llama_cpp.llama_print_system_info().decode()
    amx = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    assert not extra_buffers_wanted("auto", amx)
    assert extra_buffers_wanted("auto", amx.replace("AMX_INT8 = 1 | ", ""))
    assert extra_buffers_wanted("on", amx) and not extra_buffers_wanted("off", here)
    assert extra_buffers_wanted("auto", here) == ("AMX_INT8 = 1" not in here)
