"""The storage interface the brain talks to: turns, conversations, long-term facts, usage counters.

Callers see only this class and the records in `records.py`, so another backend (PostgreSQL for several server
replicas) can sit behind it without touching them. `Store.open` picks the backend from the location: a file
path is SQLite, the default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from plush.server.store.records import Conversation, Fact, TurnRecord


class Store(ABC):
    """Async storage; open with `await Store.open(path)`, close with `await store.close()`."""

    @classmethod
    async def open(cls, location: Path | str) -> Store:
        """Open (creating and migrating) the store at `location`."""
        from plush.server.store.sqlite import SqliteStore

        return await SqliteStore.connect(Path(location))

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_version(self) -> int:
        """The number of migrations applied."""

    # -- turns ---------------------------------------------------------------------------------------------------

    @abstractmethod
    async def add_turn(self, turn: TurnRecord) -> None:
        """Persist a finished (or interrupted, or failed) turn."""

    @abstractmethod
    async def get_turn(self, turn_id: str) -> TurnRecord | None: ...

    @abstractmethod
    async def list_turns(self, limit: int = 50, *, conversation_id: str | None = None) -> list[TurnRecord]:
        """Newest turns first, for logs and the dashboard."""

    @abstractmethod
    async def recent_turns(self, conversation_id: str, limit: int) -> list[TurnRecord]:
        """The last `limit` answered turns since the conversation's last reset, oldest first (its window)."""

    @abstractmethod
    async def search_turns(
        self,
        terms: Sequence[str],
        *,
        limit: int,
        conversation_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[TurnRecord]:
        """Answered turns whose words start with any of `terms`, best match first (full-text recall)."""

    @abstractmethod
    async def delete_turns_before(self, moment: float) -> int:
        """Delete turns older than `moment` (retention); returns how many went."""

    # -- conversations -------------------------------------------------------------------------------------------

    @abstractmethod
    async def reset_conversation(self, conversation_id: str) -> None:
        """Start the conversation's window afresh; older turns stay for recall and the log."""

    @abstractmethod
    async def list_conversations(self) -> list[Conversation]: ...

    # -- long-term facts -----------------------------------------------------------------------------------------

    @abstractmethod
    async def add_fact(self, text: str, source: str) -> Fact:
        """Remember `text` (an identical fact is not stored twice); returns the stored fact."""

    @abstractmethod
    async def list_facts(self) -> list[Fact]:
        """Every fact, oldest first."""

    @abstractmethod
    async def remove_fact(self, fact_id: int) -> bool:
        """Forget a fact; False when there was none with that id."""

    # -- usage counters ------------------------------------------------------------------------------------------

    @abstractmethod
    async def add_usage(self, day: str, key: str, amount: int = 1) -> int:
        """Add to a per-day counter (e.g. Gemini requests) and return its new value."""

    @abstractmethod
    async def usage(self, day: str, key: str) -> int:
        """A per-day counter's value (0 when nothing was counted that day)."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
