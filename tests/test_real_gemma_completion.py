"""Real weights: the base Gemma 3 270M (no chat template) answers a child in character through the transcript.

Without completion mode this model got llama-cpp-python's Llama-2 fallback prompt and answered `[/INST]` soup.
It runs as the server runs it, in the local brain's worker process, on this machine's CPU (whose kernels differ
from an owner's: on Intel CPUs with AMX this test crashed the whole suite until the worker loaded without
llama.cpp's extra buffer types; see `extra_buffers_wanted`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plush.config import LlamaConfig
from plush.server.llm.base import Message, Prompt
from plush.server.llm.llama_process import LlamaProcess
from plush.server.persona import load_persona

pytestmark = pytest.mark.real_weights

QUESTIONS = (
    "Momo, what is your favourite colour?",
    "Can you sing me a song?",
    "Why is the sky blue?",
    "I'm a little bit scared of the dark.",
)
LEAKS = ("[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>", "Owner:", "Momo:", "<|im_start|>")
META = ("as an ai", "language model", "i am an ai", "i'm an ai", "assistant")


async def test_base_gemma_answers_a_child_in_character(real_gemma: Path) -> None:
    persona = load_persona("en")
    backend = LlamaProcess(real_gemma, LlamaConfig(n_ctx=2048, max_tokens=80))
    await backend.start(persona.system_prompt)
    try:
        assert backend.state == "ready", backend.health_note()
        assert backend.prompt_mode == "completion"
        history: tuple[Message, ...] = ()
        for question in QUESTIONS:
            prompt = Prompt(persona.system_prompt, history, question, speaker=persona.name)
            reply = "".join([delta async for delta in backend.stream(prompt)])
            assert reply.strip(), f"no answer to {question!r}"
            assert reply == reply.strip()
            assert not [leak for leak in LEAKS if leak in reply], f"prompt format leaked into {reply!r}"
            assert "\n" not in reply and len(reply) < 200, f"not one short spoken reply: {reply!r}"
            assert not [meta for meta in META if meta in reply.lower()], f"out of character: {reply!r}"
            history += (Message("user", question), Message("assistant", reply))
        assert backend.crashes == 0
    finally:
        await backend.aclose()
