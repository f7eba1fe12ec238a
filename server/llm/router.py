"""The LLM router: per turn, pick Gemini or the local Llama, fall back when one fails, and record why.

Order: Gemini first when an API key is set (and `llm.backend` allows it), the local Llama otherwise. A Gemini
failure before its first token goes to Llama transparently; after the first token the reply simply ends there
(the owner already heard part of it). When no backend can answer, the persona's fallback line is said instead
of silence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from plush.logs import get_logger
from server.llm.base import LlmBackend, LlmError, Prompt

log = get_logger(__name__)


@dataclass
class Route:
    """Which backend answered a turn and why; filled in while the reply streams."""

    backend: str = ""
    reason: str = ""
    error: str = ""


class LlmRouter:
    """Chooses a backend per turn. `primary` is Gemini (or None), `fallback` the local Llama (or None)."""

    def __init__(self, primary: LlmBackend | None, fallback: LlmBackend | None, *, no_primary_reason: str) -> None:
        self.primary = primary
        self.fallback = fallback
        self._no_primary_reason = no_primary_reason

    @property
    def backends(self) -> list[str]:
        return [b.name for b in (self.primary, self.fallback) if b is not None]

    async def stream(self, prompt: Prompt, route: Route, fallback_line: str) -> AsyncIterator[str]:
        """Yield the reply; `route` says afterwards which backend produced it and why."""
        reason = self._no_primary_reason
        if self.primary is not None:
            route.backend, route.reason = self.primary.name, "primary"
            started = False
            try:
                async for delta in self.primary.stream(prompt):
                    started = True
                    yield delta
                if started:
                    return
                # Nothing to say (e.g. a reply blocked by safety filters): the persona's line, not silence.
                route.backend, route.reason = "fallback_line", f"{self.primary.name}_empty_reply"
                yield fallback_line
                return
            except LlmError as exc:
                route.error = str(exc)
                if started:
                    route.reason = "error_mid_stream"
                    log.warning("llm_failed_mid_stream", backend=self.primary.name, error=str(exc))
                    return
                log.warning("llm_failed_falling_back", backend=self.primary.name, error=str(exc))
                reason = f"{self.primary.name}_error"
        if self.fallback is not None:
            route.backend, route.reason = self.fallback.name, reason
            started = False
            try:
                async for delta in self.fallback.stream(prompt):
                    started = True
                    yield delta
                return
            except LlmError as exc:
                route.error = "; ".join(filter(None, (route.error, str(exc))))
                log.error("llm_fallback_failed", backend=self.fallback.name, error=str(exc))
                if started:
                    return
                reason = f"{self.fallback.name}_error"
        route.backend, route.reason = "fallback_line", reason
        yield fallback_line

    async def aclose(self) -> None:
        for backend in (self.primary, self.fallback):
            if backend is not None:
                await backend.aclose()
