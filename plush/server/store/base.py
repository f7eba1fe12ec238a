"""The storage interface the brain talks to: turns, conversations, long-term facts, usage counters.

Callers see only this class and the records in `records.py`, so another backend (PostgreSQL for several server
replicas) can sit behind it without touching them. `Store.open` picks the backend from the location: a file
path is SQLite, the default. The interface never imports a backend: each registers how it opens a location
(`Store.register_backend`), and the package registers SQLite, so the layers point one way only.

Every fact and every turn has an owner (see plush/owners.py); the methods that feed a prompt take the owner
and return only what is its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import ClassVar, TypeAlias

from plush.server.store.records import Conversation, Fact, Pairing, StoreError, TurnRecord

Opener: TypeAlias = Callable[[str], Awaitable["Store"]]
DEFAULT_SCHEME = "sqlite"
"""The backend of a location that is a plain file path."""


class Store(ABC):
    """Async storage; open with `await Store.open(path)`, close with `await store.close()`."""

    _backends: ClassVar[dict[str, Opener]] = {}

    @classmethod
    def register_backend(cls, scheme: str, opener: Opener) -> None:
        """Let `Store.open` open `scheme://...` locations with `opener` (a plain path is `DEFAULT_SCHEME`)."""
        cls._backends[scheme] = opener

    @classmethod
    async def open(cls, location: Path | str) -> Store:
        """Open (creating and migrating) the store at `location`."""
        text = str(location)
        scheme, sep, _ = text.partition("://")
        scheme = scheme if sep and scheme.isalnum() else DEFAULT_SCHEME
        opener = cls._backends.get(scheme)
        if opener is None:
            known = ", ".join(sorted(cls._backends)) or "none"
            raise StoreError(f"no storage backend opens '{scheme}' locations such as {text} (known: {known})")
        return await opener(text)

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_version(self) -> int:
        """The number of migrations applied."""

    # -- turns ---------------------------------------------------------------------------------------------------

    @abstractmethod
    async def add_turn(self, turn: TurnRecord) -> None:
        """Persist a finished (or interrupted, or failed) turn, in place of its row from `begin_turn` if it has one
        (the turn is then listed once, as it ended, and comes after the turns stored before it ended). A turn
        already stored as ended is not stored again (StoreError or the engine's integrity error)."""

    @abstractmethod
    async def begin_turn(self, turn: TurnRecord) -> None:
        """Store a turn that has just started as what it stays if its replica dies in it (`records.under_way`:
        interrupted, ending `replica_lost`), so a killed replica loses no turn; `add_turn` replaces it when the
        turn ends. Nothing changes when the turn is already stored. Window and recall never return such a row."""

    @abstractmethod
    async def note_reply(self, turn_id: str, reply_text: str) -> bool:
        """What a turn still under way has said so far, into its row from `begin_turn`; False (nothing changed)
        when the turn has ended or never began."""

    @abstractmethod
    async def get_turn(self, turn_id: str) -> TurnRecord | None: ...

    @abstractmethod
    async def list_turns(self, limit: int = 50, *, conversation_id: str | None = None) -> list[TurnRecord]:
        """Newest turns first, for logs and the dashboard."""

    @abstractmethod
    async def recent_turns(self, conversation_id: str, limit: int, *, owner: str) -> list[TurnRecord]:
        """The owner's last `limit` answered turns since the conversation's last reset, oldest first (its window).

        Another owner's turns in a conversation of the same name (possible without device tokens) are left out.
        """

    @abstractmethod
    async def search_turns(
        self,
        terms: Sequence[str],
        *,
        limit: int,
        owner: str,
        conversation_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[TurnRecord]:
        """The owner's answered turns whose words start with any of `terms`, best match first (full-text recall)."""

    @abstractmethod
    async def delete_turns_before(self, moment: float) -> int:
        """Delete turns older than `moment` (retention); returns how many went."""

    @abstractmethod
    async def add_timing(self, turn_id: str, stage: str, duration_ms: float) -> bool:
        """Add one stage to a stored turn's timings (a milestone reported after the turn was stored, such as the
        plush's first audio played); False when there is no such turn."""

    @abstractmethod
    async def mark_failed(self, turn_id: str, error: str) -> bool:
        """Turn a stored turn into an `error` with `error` added to its errors (its reply, already stored as
        answered, never reached the person: Telegram refused every try); False when there is no such turn."""

    # -- conversations -------------------------------------------------------------------------------------------

    @abstractmethod
    async def reset_conversation(self, conversation_id: str) -> None:
        """Start the conversation's window afresh; older turns stay for recall and the log."""

    @abstractmethod
    async def list_conversations(self) -> list[Conversation]: ...

    # -- long-term facts -----------------------------------------------------------------------------------------

    @abstractmethod
    async def add_fact(self, text: str, source: str, *, owner: str) -> Fact:
        """Remember `text` for `owner` (an identical fact of theirs is not stored twice); returns the stored fact."""

    @abstractmethod
    async def list_facts(self, owner: str) -> list[Fact]:
        """The owner's facts, oldest first (what their prompts carry)."""

    @abstractmethod
    async def all_facts(self) -> list[Fact]:
        """Every owner's facts, oldest first: for the owner of the server (`plush memory`), never for a prompt."""

    @abstractmethod
    async def move_fact(self, fact_id: int, owner: str) -> Fact | None:
        """Give a fact to another owner (merged when they already have it); None when there is no such fact."""

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

    # -- paired plushes (plush/server/paired_plushes.py) ---------------------------------------------------------

    @abstractmethod
    async def add_pairing(self, pairing: Pairing, *, replace: bool = False) -> bool:
        """Keep a paired plush; with `replace` an earlier pairing of the same name is overwritten. False when the
        name was already paired and `replace` is off (nothing changed)."""

    @abstractmethod
    async def remove_pairing(self, name: str) -> bool:
        """Unpair `name`; False when it was not paired."""

    @abstractmethod
    async def pairings(self, name: str | None = None) -> list[Pairing]:
        """The paired plushes by name (only `name`'s, when given)."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
