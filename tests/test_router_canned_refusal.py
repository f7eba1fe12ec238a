"""A small local model's canned refusal never reaches the child: the persona's refused line is said instead.

Which everyday prompt the 0.5B refuses at greedy decoding depends on the CPU's kernels ("I'm sad today." got
"I'm sorry, but I can't help with that." on an AVX2 machine, a kind answer on an AVX-512 one), so no real GGUF
refuses on cue on every machine: the local backend here is a stand-in that streams a scripted reply; the router
under test is the real one. tests/test_brain_quality.py shows it on the real weights.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from plush.server.llm.base import LlmBackend, Prompt, Usage
from plush.server.llm.router import LlmRouter, Route

FALLBACK = "Hmm, my head feels a little fuzzy right now."
REFUSED = "I'm right here with you. Do you want to tell me more about it?"


class ScriptedModel(LlmBackend):
    name = "llama"

    def __init__(self, deltas: Sequence[str]) -> None:
        self.deltas = deltas
        self.closed_after = -1

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        sent = 0
        try:
            for delta in self.deltas:
                yield delta
                sent += 1
        finally:
            self.closed_after = sent


async def reply(model: ScriptedModel) -> tuple[str, Route]:
    router = LlmRouter(None, model, no_primary_reason="no_api_key")
    route = Route()
    said = "".join(
        [d async for d in router.stream(Prompt("system", (), "I'm sad today."), route, FALLBACK, refused_line=REFUSED)]
    )
    return said, route


@pytest.mark.parametrize(
    "deltas",
    [
        ["I'm", " sorry,", " but I can't", " help with that.", " Is there", " anything else", " I can do?"],
        ["죄송하지만", " 도와드릴 수", " 없어요.", " 다른 걸 물어봐 주세요."],
        ["As an AI, I don't have feelings."],
    ],
)
async def test_a_canned_refusal_is_replaced_by_the_refused_line_and_the_model_stopped(deltas: list[str]) -> None:
    model = ScriptedModel(deltas)
    said, route = await reply(model)
    assert said == REFUSED
    assert (route.backend, route.reason) == ("fallback_line", "llama_refused")
    assert model.closed_after < len(deltas) or len("".join(deltas)) < 48, "the model was stopped, not read out"


@pytest.mark.parametrize(
    "deltas",
    [
        ["I'm sorry", " you feel sad.", " Do you want", " a big hug?"],
        ["Hi!"],
        ["Seven!", " Three plus four is seven."],
    ],
)
async def test_an_ordinary_reply_passes_whole(deltas: list[str]) -> None:
    said, route = await reply(ScriptedModel(deltas))
    assert said == "".join(deltas)
    assert (route.backend, route.reason) == ("llama", "no_api_key")
