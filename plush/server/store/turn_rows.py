"""The `turns` table as its readers see it: the columns a `TurnRecord` is stored in, a row back into a record, and
the full-text query made from words a person typed.

One definition for every reader: the SQLite store (`sqlite.py`, which writes it), the dashboard's read-only
`TurnLog` (`dashboard/queries.py`, on a connection of its own) and the PostgreSQL store (`postgres.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal, Protocol

from plush.server.store.records import REPLICA_LOST, Conversation, TurnRecord

TURN_COLUMNS: tuple[str, ...] = (
    "id",
    "conversation_id",
    "device_id",
    "source",
    "started_at",
    "user_text",
    "reply_text",
    "language",
    "backend",
    "backend_reason",
    "timings",
    "error",
    "interrupted",
    "prompt_tokens",
    "output_tokens",
    "owner",
    "outcome",
    "safety",
    "ending",
    "voices",
    "speculations",
    "speculations_adopted",
    "speculations_wasted",
    "speculation_gemini_requests",
    "speculation_gemini_wasted",
)
"""The columns that hold a turn, in the order `turn_values` gives them. `interrupted` is kept for older readers;
the record derives it from `outcome`."""


def turn_columns(alias: str = "") -> str:
    """The columns for a SELECT or INSERT, each prefixed with `alias.` when one is given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + column for column in TURN_COLUMNS)


def turn_values(turn: TurnRecord) -> tuple[Any, ...]:
    """The record's values for `TURN_COLUMNS`, in their order."""
    values: dict[str, Any] = {
        column: getattr(turn, column) for column in TURN_COLUMNS if column not in ("timings", "interrupted")
    }
    values["timings"] = json.dumps(turn.timings, sort_keys=True)
    values["interrupted"] = int(turn.interrupted)
    return tuple(values[column] for column in TURN_COLUMNS)


def ended(alias: str = "") -> str:
    """A SQL condition that holds for a turn whose end is stored, not one still under way or lost with its replica
    (`records.REPLICA_LOST`): the only turns a prompt may carry, on both engines."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}ending != '{REPLICA_LOST}'"


class Row(Protocol):
    """A result row read by column name: sqlite3's and asyncpg's alike."""

    def __getitem__(self, key: str) -> Any: ...


def turn_from_row(row: Row) -> TurnRecord:
    """The record a row of `TURN_COLUMNS` holds; columns outside them (a `rowid` asked for too) are left out."""
    data = {column: row[column] for column in TURN_COLUMNS if column != "interrupted"}
    data["timings"] = json.loads(data["timings"] or "{}")
    return TurnRecord(**data)


def fts_query(words: Iterable[str], *, operator: Literal["AND", "OR"] = "AND", most: int | None = None) -> str:
    """An FTS5 query over `turns_fts`: each word quoted (user words never become FTS5 syntax) and made a prefix
    ("rabbit*" matches "rabbits", "토끼*" its particle forms), joined by `operator` ("AND": all needed, "OR": any).
    At most `most` words are kept (the first ones); empty when no word has anything to match."""
    terms = ['"' + word.replace('"', '""') + '"*' for word in words if word.strip().strip('"')]
    return f" {operator} ".join(terms[:most])


CONVERSATIONS_QUERY = (
    "SELECT c.id, c.reset_at, c.owner, COUNT(t.id) AS turns,"
    " COALESCE(MAX(t.started_at), c.created_at) AS last"
    " FROM conversations c LEFT JOIN turns t ON t.conversation_id = c.id"
    " GROUP BY c.id ORDER BY last DESC"
)
"""Every conversation with its turn count and last turn, newest first: the same SQL on both engines."""


def conversation_from_row(row: Row) -> Conversation:
    return Conversation(
        id=row["id"], turns=row["turns"], last_turn_at=row["last"], reset_at=row["reset_at"], owner=row["owner"]
    )
