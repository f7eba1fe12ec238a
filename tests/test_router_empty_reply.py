"""An empty reply from the local model is never silence: the persona's fallback line is said instead.

The local backend here is a stand-in that answers only whitespace (a base model can stop at once on its stop
sequence; a real GGUF cannot be made to do so on demand); the router under test is the real one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from plush.server.llm.base import LlmBackend, Prompt, Usage
from plush.server.llm.router import LlmRouter, Route

FALLBACK = "Hmm, my head feels a little fuzzy right now."


class WhitespaceModel(LlmBackend):
    name = "llama"

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        yield " "
        yield "\n"


async def test_an_empty_local_reply_is_the_fallback_line() -> None:
    router = LlmRouter(None, WhitespaceModel(), no_primary_reason="no_api_key")
    route = Route()

    said = "".join([d async for d in router.stream(Prompt("system", (), "hi"), route, FALLBACK)])

    assert said.strip() == FALLBACK
    assert (route.backend, route.reason) == ("fallback_line", "llama_empty_reply")
