"""The local model answers confirmed turns first: a speculative start (plush/server/speculation.py) uses it only
while no confirmed turn does, and gives way the moment one comes.

The local model generates one reply at a time, so a speculation generating for one plush would make another
plush's confirmed turn wait behind it. Here a speculation is refused at once (`LlmBusyError`, the router then
gives the speculation nothing to adopt) while a confirmed turn streams, and a confirmed turn cancels every
speculation still on the model before it starts: each stops within a token, or never starts when still queued.
Which streams are speculative travels in a context variable set by the speculation's own task, so the router's
API stays the same for every other caller. A speculation adopted at release is confirmed from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextvars import ContextVar

from plush.server.llm.base import LlmBackend, LlmBusyError, Prompt, Usage


class Ticket:
    """One speculation's claim on the local model; `confirmed` once its turn adopted it."""

    def __init__(self) -> None:
        self.confirmed = False


SPECULATION: ContextVar[Ticket | None] = ContextVar("plush_speculation", default=None)
"""Set in a speculation's task: the streams it opens are speculative."""


class LocalTurns:
    """Who is on the local model: confirmed turns, and speculations (with the task to cancel for each)."""

    def __init__(self) -> None:
        self._confirmed = 0
        self._speculations: dict[Ticket, asyncio.Task[object]] = {}

    @property
    def speculating(self) -> int:
        """Speculations on the local model now, not yet confirmed."""
        return sum(not ticket.confirmed for ticket in self._speculations)

    async def stream(self, backend: LlmBackend, prompt: Prompt, usage: Usage | None) -> AsyncGenerator[str]:
        """`backend.stream`, as a confirmed turn or a speculation (see the module's docstring)."""
        ticket = SPECULATION.get()
        if ticket is not None and not ticket.confirmed:
            task = asyncio.current_task()
            if self._confirmed or task is None:
                raise LlmBusyError("the local model is answering a confirmed turn: no speculation now")
            self._speculations[ticket] = task
            try:
                async for delta in backend.stream(prompt, usage):
                    yield delta
            finally:
                del self._speculations[ticket]
            return
        waiting = [task for other, task in self._speculations.items() if not other.confirmed and other is not ticket]
        for task in waiting:
            task.cancel()
        self._confirmed += 1
        try:
            await asyncio.gather(*waiting, return_exceptions=True)
            async for delta in backend.stream(prompt, usage):
                yield delta
        finally:
            self._confirmed -= 1
