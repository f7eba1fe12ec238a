"""The brain started before the release: a speculation on the transcript the plush says has settled.

The owner usually stops speaking well before they let go of the button. When the plush sends `Settled` (its
open phrase is decoded and speech has stopped), the server starts the brain on that text at once: prompt, memory
and the LLM, read up to the reply's first piece and then paused. At TurnEnd the final transcript decides. The
same text after `normalise` (and the same prompt once memory has learned from it) adopts the speculation: its
buffered deltas flow at once and the rest streams on. Any other text, an empty `Settled` (the owner spoke on), a
turn that ends otherwise: the speculation is cancelled, which closes its LLM stream within a token, and nothing
of it was said or stored (it only ever wrote to its own buffer).

Cost is bounded per turn: one speculation in flight (a newer settled text cancels the older one), at most
`[server] max_speculations` per turn. A speculative Gemini request counts against the budget like any other, and
is held back when it would leave the client's share or the minute budget without room for the real turn
(`LlmRouter.stream`'s `reserve`); the local model gives way to confirmed turns (llm/local_turns.py). What each
turn spent is stored with it (`TurnRecord.speculations` ...).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from plush.logs import get_logger
from plush.server.llm.base import Prompt
from plush.server.llm.local_turns import SPECULATION, Ticket
from plush.server.llm.router import HELD_BACK, Route
from plush.server.sentence_chunker import SentenceChunker

log = get_logger(__name__)
Begin = Callable[[Route], Awaitable[tuple[Prompt, AsyncGenerator[str]] | None]]
"""Builds a speculation's prompt and opens its LLM stream (None: nothing to speculate on, e.g. a flagged text)."""
_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalise(text: str) -> str:
    """Text as the comparison sees it: case, punctuation and spacing left out ("Hi, Momo!" == "hi momo")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", folded).split())


class Speculation:
    """One speculative start: its own task reads the LLM into a buffer, pausing after the first piece."""

    def __init__(self, text: str, begin: Begin) -> None:
        self.text = text
        self.route = Route()
        self.prompt: Prompt | None = None
        self.held_back = False
        """Nothing was started (the budget guard, a flagged text, no brain free): it does not count."""
        self.adopted = False
        self._begin = begin
        self._buffer: list[str] = []
        self._changed = asyncio.Event()
        self._go = asyncio.Event()
        self._answered = asyncio.Event()
        """Set at its first delta, or when it ended without one."""
        self._ticket = Ticket()
        self._error: BaseException | None = None
        self.task = asyncio.create_task(self._read(), name="plush-speculation")

    @property
    def done(self) -> bool:
        return self.task.done()

    @property
    def gemini_requests(self) -> int:
        return self.route.gemini_requests

    def cancel(self) -> None:
        """Stop it (its LLM stream closes within a token); its buffer is never read."""
        self.task.cancel()

    async def _read(self) -> None:
        SPECULATION.set(self._ticket)  # this task's context only: its streams are speculative
        try:
            begun = await self._begin(self.route)
            if begun is None:
                self.held_back = True
                return
            self.prompt, deltas = begun
            chunker = SentenceChunker()
            async with aclosing(deltas) as stream:
                async for delta in stream:
                    self._buffer.append(delta)
                    self._changed.set()
                    self._answered.set()
                    if not self._go.is_set() and chunker.feed(delta):
                        await self._go.wait()  # the first piece is ready: no more until the turn adopts it
            self.held_back = not self._buffer and self.route.reason == HELD_BACK
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised where the adopting turn reads it, stored with that turn
            self._error = exc
        finally:
            self._answered.set()
            self._changed.set()

    async def adopt(self, prompt: Prompt) -> AsyncGenerator[str] | None:
        """The turn's deltas, when this speculation answered the same prompt (the user's words may differ only
        in what `normalise` leaves out) with a brain's words; None (and cancelled) when it cannot be used.

        Waits for its first delta (what the turn would wait for anyway): one held back by the budget guard, or
        given only the persona's fallback line (no brain free), leaves the turn to ask the brain itself."""
        waiter = asyncio.ensure_future(self._answered.wait())
        try:  # or its end: a task cancelled before it ran never sets the event
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        usable = (
            not self.task.cancelled()
            and self._error is None
            and self.prompt is not None
            and replace(self.prompt, user=prompt.user) == prompt
            and self.route.backend not in ("", "fallback_line")
            and not (self.done and self.route.failed)
        )
        if not usable:
            self.cancel()
            return None
        self.adopted = self._ticket.confirmed = True
        self._go.set()
        return self._replay()

    async def _replay(self) -> AsyncGenerator[str]:
        """What was buffered, then the rest as it comes; closing it early stops the speculation's stream."""
        sent = 0
        try:
            while True:
                self._changed.clear()
                while sent < len(self._buffer):
                    sent += 1
                    yield self._buffer[sent - 1]
                if self.done:
                    if sent < len(self._buffer):
                        continue
                    if self._error is not None:
                        raise self._error
                    return
                await self._changed.wait()
        finally:
            self.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class SpeculationCounts:
    """What one turn spent on speculations (stored with it)."""

    started: int = 0
    adopted: int = 0
    wasted: int = 0
    gemini_requests: int = 0
    """Gemini requests speculations made, the adopted one's included."""
    gemini_wasted: int = 0
    """Gemini requests made by speculations that were not adopted."""


class TurnSpeculations:
    """A turn's speculations: at most one in flight, at most `most` started; `take` at release."""

    def __init__(self, start: Callable[[str], Speculation], most: int) -> None:
        self._start = start
        self.most = most
        self.current: Speculation | None = None
        self._all: list[Speculation] = []

    def settled(self, text: str) -> None:
        """The plush's settled text so far (empty: the owner spoke on)."""
        text = text.strip()
        if self.current is not None and text and normalise(self.current.text) == normalise(text):
            return  # the same words again: the one in flight already answers them
        self.drop()
        if not text or not normalise(text):
            return
        if sum(not s.held_back for s in self._all) >= self.most:
            return
        self.current = self._start(text)
        self._all.append(self.current)

    def drop(self) -> None:
        """Cancel the speculation in flight, if any."""
        if self.current is not None:
            self.current.cancel()
            self.current = None

    def take(self, final_text: str) -> Speculation | None:
        """At release: the speculation on the same words, for the turn to adopt (or not, `Speculation.adopt`);
        any other is cancelled."""
        current, self.current = self.current, None
        if current is not None and normalise(current.text) == normalise(final_text) and not current.task.cancelled():
            return current
        if current is not None:
            current.cancel()
        return None

    async def counts(self) -> SpeculationCounts:
        """What the turn spent, once every speculation not adopted has stopped (within a token of its cancel)."""
        waste = [s for s in self._all if not s.adopted]
        for speculation in waste:
            speculation.cancel()
        await asyncio.gather(*(s.task for s in waste), return_exceptions=True)
        return self.counts_now()

    def counts_now(self) -> SpeculationCounts:
        """The same without waiting (a speculation cancelled a moment ago may not have said what it spent)."""
        counts = SpeculationCounts()
        for speculation in self._all:
            if speculation.held_back and not speculation.gemini_requests:
                continue
            counts.started += 1
            counts.gemini_requests += speculation.gemini_requests
            if speculation.adopted:
                counts.adopted += 1
            else:
                counts.wasted += 1
                counts.gemini_wasted += speculation.gemini_requests
        return counts

    def close(self) -> None:
        """The turn has ended: nothing of it speculates on."""
        for speculation in self._all:
            if not speculation.adopted:
                speculation.cancel()
        self.current = None
