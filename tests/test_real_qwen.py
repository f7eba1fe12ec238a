"""Real weights: a real instruct model from the package registry (Qwen2.5-Coder 0.5B Instruct) answers a child.

It runs as the server runs it: in the local brain's worker process, with its own chat template, on this
machine's CPU, in English and in Korean.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plush.config import LlamaConfig
from plush.server.llm.base import Prompt
from plush.server.llm.llama_process import LlamaProcess
from plush.server.persona import load_persona

pytestmark = pytest.mark.real_weights
HANGUL = re.compile(r"[\uac00-\ud7a3]")


async def reply(backend: LlamaProcess, system: str, question: str, speaker: str) -> str:
    return "".join([delta async for delta in backend.stream(Prompt(system, (), question, speaker=speaker))])


async def test_a_registry_instruct_model_answers_in_character_in_english_and_korean(real_qwen_small: Path) -> None:
    config = LlamaConfig(n_ctx=2048, max_tokens=60, temperature=0.0)
    for language, question, check in (
        ("en", "Momo, what is 3 plus 4?", lambda text: "7" in text or "seven" in text.lower()),
        ("ko", "모모야, 안녕! 너는 누구야?", lambda text: bool(HANGUL.search(text))),
    ):
        persona = load_persona(language)
        backend = LlamaProcess(real_qwen_small, config)
        await backend.start(persona.system_prompt)
        try:
            assert backend.prompt_mode == "chat", "the GGUF's own chat template"
            text = await reply(backend, persona.system_prompt, question, persona.name)
            assert text.strip(), f"no answer to {question!r}"
            assert check(text), f"{language}: {question!r} -> {text!r}"
            assert "<|im_" not in text and "assistant" not in text.lower(), f"template leaked: {text!r}"
        finally:
            await backend.aclose()
