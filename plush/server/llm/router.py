"""The LLM router: per turn, pick Gemini or the local Llama, fall back when one cannot answer, and record why.

Gemini goes first when an API key is set and its budget admits the turn (checked before calling, so a spent
budget costs no request). Otherwise, or when Gemini fails before its first token, the local Llama answers
transparently. After the first token a failure just ends the reply there (the owner already heard part of it).
When no backend can answer, the persona's fallback line is said instead of silence. `Route.reason` names why:
primary, no_api_key, retry_after, circuit_open, minute_budget_spent, daily_budget_spent, quota_exhausted,
shared_state_unreachable (the replicas' Redis did not answer),
gemini_error, error_mid_stream, gemini_empty_reply, gemini_safety (Gemini's own filter refused: `Route.blocked` has
its category, and no other brain is asked), local_llm_crashed (the local model's worker died under the turn:
the turn is an error), local_llm_stalled (it gave no token for `stall_s`: killed and restarted, the turn is an
error), local_llm_down (it keeps dying: the breaker is open), llama_refused (the local model opened
with a canned refusal: the persona's `refused_line` is said instead, see canned_refusal.py) ...
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from plush.logs import get_logger
from plush.server.llm.base import (
    LlmBackend,
    LlmBlockedError,
    LlmBusyError,
    LlmCrashedError,
    LlmError,
    LlmQuotaError,
    Prompt,
    Usage,
)
from plush.server.llm.canned_refusal import without_canned_refusal
from plush.server.llm.gemini_budget import GeminiBudget
from plush.server.llm.local_turns import LocalTurns

log = get_logger(__name__)
_SENTENCE_ENDS = frozenset(".!?…。！？\"'”’)")
QUOTA_PAUSE_S = 60.0
"""Pause after a 429 that names no retry delay."""
HELD_BACK = "speculation_held_back"
REFUSED = "_refused"
"""The end of a reason for a local model's canned refusal, replaced by the persona's line (`llama_refused`)."""
"""A speculative start the Gemini budget guard did not let go (`LlmRouter.stream`'s `reserve`)."""


@dataclass
class Route:
    """Which backend answered a turn, why, and what it cost; filled in while the reply streams."""

    backend: str = ""
    reason: str = ""
    error: str = ""
    usage: Usage = field(default_factory=Usage)
    failed: bool = False
    """A backend failed under the turn (broke off mid-reply, crashed, or is down): the turn is stored as an error,
    whatever was said."""
    blocked: str = ""
    """The provider's own safety filter stopped the turn, in this category (the companion says its calm line and
    stores the turn `blocked`); no other brain was asked."""
    gemini_requests: int = 0
    """Requests the budget admitted for this reply (0 or 1): what a speculation that is not adopted wasted."""


class LlmRouter:
    """Chooses a backend per turn. `primary` is Gemini (or None), `fallback` the local Llama (or None)."""

    def __init__(
        self,
        primary: LlmBackend | None,
        fallback: LlmBackend | None,
        *,
        no_primary_reason: str,
        budget: GeminiBudget | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.budget = budget
        self.local_turns = LocalTurns()
        """Speculations on the local model give way to confirmed turns (see local_turns.py)."""
        self._no_primary_reason = no_primary_reason
        self._description = " + ".join(self.backends)

    @property
    def description(self) -> str:
        """Which brains answer, for people (the doctor, the dashboard, /status), with any backend's health note
        (the local brain restarting after a crash, or down)."""
        notes = [note for b in (self.primary, self.fallback) if b is not None and (note := b.health_note())]
        return "; ".join([self._description, *notes])

    @description.setter
    def description(self, text: str) -> None:
        """Set by whoever builds the router (it knows the model names)."""
        self._description = text

    @property
    def backends(self) -> list[str]:
        return [b.name for b in (self.primary, self.fallback) if b is not None]

    async def now(self, client_id: str = "") -> Route:
        """Which backend would answer a turn from `client_id` now, and why (no request is counted): for /status
        and the dashboard. The budget's own checks decide it, as they do for a turn (`GeminiBudget.refusal`)."""
        reason = self._no_primary_reason
        if self.primary is not None:
            refusal = await self.budget.refusal(client_id) if self.budget is not None else None
            if refusal is None:
                return Route(self.primary.name, "primary")
            reason = refusal
        if self.fallback is not None and (down := self.fallback.down_reason()):
            return Route("fallback_line", down)
        return Route(self.fallback.name if self.fallback is not None else "fallback_line", reason)

    async def stream(
        self,
        prompt: Prompt,
        route: Route,
        fallback_line: str,
        *,
        client_id: str = "",
        reserve: int = 0,
        refused_line: str = "",
    ) -> AsyncGenerator[str]:
        """Yield the reply; `route` says afterwards which backend produced it and why.

        `refused_line` is said instead of the local model's canned refusal (see canned_refusal.py; empty: the
        fallback line).

        `reserve` > 0 is a speculative start (plush/server/speculation.py): Gemini takes it only when that many
        real turns still fit in the client's share and the minute budget after it. When only the reserve stands in
        the way (a real turn would still get Gemini), nothing is yielded and `route.reason` is `HELD_BACK`: the
        local model must not answer in Gemini's place what Gemini will answer at release."""
        reason = self._no_primary_reason
        if self.primary is not None:
            refusal = await self.budget.admit(client_id, prompt, reserve=reserve) if self.budget else None
            if refusal is not None and reserve and self.budget and await self.budget.refusal(client_id, prompt) is None:
                route.backend, route.reason = "", HELD_BACK
                return
            if refusal is None:
                route.backend, route.reason = self.primary.name, "primary"
                route.gemini_requests += 1
                outcome = _Outcome()
                said = ""
                async with aclosing(self._primary(prompt, route, outcome)) as primary:
                    async for delta in primary:
                        said += delta
                        yield delta
                if outcome.done:
                    if route.blocked:
                        return
                    if route.reason == "error_mid_stream" and (ending := graceful_ending(said, fallback_line)):
                        yield ending
                    return
                if outcome.empty:
                    route.backend, route.reason = "fallback_line", f"{self.primary.name}_empty_reply"
                    yield fallback_line
                    return
                reason = outcome.reason
            else:
                reason = refusal
        if self.fallback is not None:
            local = _Outcome(reason=reason)
            async with aclosing(self._local(prompt, route, fallback_line, local)) as stream:
                async for delta in stream:
                    yield delta
            if local.done:
                return
            reason = local.reason
        route.backend, route.reason = "fallback_line", reason
        yield (refused_line or fallback_line) if reason.endswith(REFUSED) else fallback_line

    async def _local(self, prompt: Prompt, route: Route, fallback_line: str, outcome: _Outcome) -> AsyncGenerator[str]:
        """Stream from the local model; `outcome.done` once it answered, else `outcome.reason` says why not.

        An empty (or whitespace-only) reply counts as no answer: silence is never what the owner should hear.
        """
        assert self.fallback is not None
        name = self.fallback.name
        route.backend, route.reason = name, outcome.reason
        said = ""
        refused: list[str] = []
        try:
            async with aclosing(self.local_turns.stream(self.fallback, prompt, route.usage)) as stream:
                async for delta in without_canned_refusal(stream, refused):
                    said += delta
                    yield delta
        except LlmError as exc:
            route.error = "; ".join(filter(None, (route.error, str(exc))))
            log.error("llm_fallback_failed", backend=name, error=str(exc))
            if isinstance(exc, LlmCrashedError):
                route.failed = True
                if said and (ending := graceful_ending(said, fallback_line)):
                    yield ending
                outcome.done = bool(said)
                route.reason = outcome.reason = exc.reason
            elif said:
                route.reason, route.failed = "error_mid_stream", True
                if ending := graceful_ending(said, fallback_line):
                    yield ending
                outcome.done = True
            else:
                outcome.reason = f"{name}_{'busy' if isinstance(exc, LlmBusyError) else 'error'}"
            return
        outcome.done = bool(said.strip())
        if refused:
            outcome.reason = f"{name}{REFUSED}"
            log.warning("llm_canned_refusal", backend=name, start=refused[0])
        elif not outcome.done:
            outcome.reason = f"{name}_empty_reply"
            log.warning("llm_empty_reply", backend=name)

    async def _primary(self, prompt: Prompt, route: Route, outcome: _Outcome) -> AsyncGenerator[str]:
        """Stream from Gemini, telling the budget and breaker how it went; `outcome` says what is left to do."""
        assert self.primary is not None
        breaker = self.budget.breaker if self.budget else None
        started = False
        received = 0
        try:
            async with aclosing(self.primary.stream(prompt, route.usage)) as stream:
                async for delta in stream:
                    started = started or bool(delta.strip())  # whitespace alone says nothing
                    received += len(delta)
                    yield delta
            outcome.done, outcome.empty = started, not started
            if breaker:
                breaker.success()
        except LlmBlockedError as exc:
            self._blocked(exc, route, outcome)
        except LlmError as exc:
            self._primary_failed(exc, route, outcome, received if started else 0)
        finally:
            if breaker and not (outcome.done or outcome.empty or outcome.reason):
                breaker.release()  # cancelled before Gemini said anything: no verdict on its health

    def _primary_failed(self, exc: LlmError, route: Route, outcome: _Outcome, received: int) -> None:
        """Gemini failed, before a word (`received` 0: another brain may answer) or after `received` characters."""
        assert self.primary is not None
        breaker = self.budget.breaker if self.budget else None
        route.error = str(exc)
        if isinstance(exc, LlmQuotaError):
            if self.budget:
                self.budget.pause(exc.retry_after_s or QUOTA_PAUSE_S)
            if breaker:
                breaker.release()  # a quota answer says nothing about Gemini's health
            outcome.reason = "quota_exhausted"
        else:
            if breaker:
                breaker.failure()
            outcome.reason = f"{self.primary.name}_error"
        if received:
            route.reason, route.failed = "error_mid_stream", True
            if f"{received} characters" not in route.error:
                route.error += f" (after {received} characters of the reply)"
            outcome.done = True
        log.warning("llm_primary_failed", backend=self.primary.name, started=bool(received), error=str(exc))

    def _blocked(self, exc: LlmBlockedError, route: Route, outcome: _Outcome) -> None:
        """Gemini's own filter refused: Gemini is well, and the local brain must not answer what it refused."""
        assert self.primary is not None
        if self.budget:
            self.budget.breaker.success()
        route.reason, route.blocked = f"{self.primary.name}_safety", exc.category
        outcome.done = True
        log.warning("llm_primary_blocked", backend=self.primary.name, category=exc.category)

    async def aclose(self) -> None:
        for backend in (self.primary, self.fallback):
            if backend is not None:
                await backend.aclose()


def graceful_ending(said: str, fallback_line: str) -> str:
    """What to add when a backend broke off mid-reply: nothing after a whole sentence, else a trailing-off
    ellipsis and the persona's fallback line, so the owner hears a finished thought rather than a cut-off word."""
    text = said.rstrip()
    if not text or text[-1] in _SENTENCE_ENDS:
        return ""
    return "… " + fallback_line


@dataclass
class _Outcome:
    done: bool = False
    empty: bool = False
    reason: str = ""
