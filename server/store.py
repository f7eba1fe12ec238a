"""Storage: every turn with its timings, and the recent history that becomes conversation memory.

SQLite in WAL mode through aiosqlite, so the event loop never blocks on disk. The schema is versioned with
`PRAGMA user_version` and a list of migrations applied in order; callers see only `TurnRecord` and the methods
below, so another backend (PostgreSQL) can sit behind the same interface later.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from plush.errors import PlushError

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        source TEXT NOT NULL,
        started_at REAL NOT NULL,
        user_text TEXT NOT NULL,
        reply_text TEXT NOT NULL,
        language TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL DEFAULT '',
        backend_reason TEXT NOT NULL DEFAULT '',
        timings TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        interrupted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, started_at);
    """,
    """
    CREATE TABLE usage_counters (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key)
    );
    ALTER TABLE turns ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    """,
)


class StoreError(PlushError):
    """The database cannot be opened or written."""


@dataclass
class TurnRecord:
    """One exchange: what the owner said, what the companion answered, and how it went."""

    id: str
    conversation_id: str
    device_id: str
    source: str
    """"device" (spoken to the plush) or "chat" (text)."""
    user_text: str
    reply_text: str = ""
    language: str = ""
    backend: str = ""
    backend_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    """Stage name -> milliseconds."""
    error: str = ""
    interrupted: bool = False
    started_at: float = field(default_factory=time.time)
    prompt_tokens: int = 0
    output_tokens: int = 0


class Store:
    """The turn log; open with `await Store.open(path)` and `await store.close()` at shutdown."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating) the database and bring its schema up to date."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, aiosqlite.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        store = cls(db, path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            await store._migrate()
        except aiosqlite.Error as exc:
            await db.close()
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        except StoreError:
            await db.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer Plush (schema {version}, this one knows {len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self._db.close()

    async def add_turn(self, turn: TurnRecord) -> None:
        """Persist a finished (or interrupted, or failed) turn."""
        await self._db.execute(
            "INSERT INTO turns (id, conversation_id, device_id, source, started_at, user_text, reply_text,"
            " language, backend, backend_reason, timings, error, interrupted, prompt_tokens, output_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                turn.id,
                turn.conversation_id,
                turn.device_id,
                turn.source,
                turn.started_at,
                turn.user_text,
                turn.reply_text,
                turn.language,
                turn.backend,
                turn.backend_reason,
                json.dumps(turn.timings, sort_keys=True),
                turn.error,
                int(turn.interrupted),
                turn.prompt_tokens,
                turn.output_tokens,
            ),
        )
        await self._db.commit()

    async def add_usage(self, day: str, key: str, amount: int = 1) -> int:
        """Add to a per-day counter (e.g. Gemini requests) and return its new value."""
        async with self._db.execute(
            "INSERT INTO usage_counters (day, key, count) VALUES (?, ?, ?)"
            " ON CONFLICT (day, key) DO UPDATE SET count = count + excluded.count RETURNING count",
            (day, key, amount),
        ) as cur:
            row = await cur.fetchone()
        await self._db.commit()
        return int(row[0]) if row else amount

    async def usage(self, day: str, key: str) -> int:
        """A per-day counter's value (0 when nothing was counted that day)."""
        async with self._db.execute("SELECT count FROM usage_counters WHERE day = ? AND key = ?", (day, key)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def recent_turns(self, conversation_id: str, limit: int) -> list[TurnRecord]:
        """The last `limit` answered turns of a conversation, oldest first (the memory window)."""
        if limit <= 0:
            return []
        rows = await self._fetch(
            "SELECT * FROM turns WHERE conversation_id = ? AND reply_text != ''"
            " ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (conversation_id, limit),
        )
        return rows[::-1]

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        rows = await self._fetch("SELECT * FROM turns WHERE id = ?", (turn_id,))
        return rows[0] if rows else None

    async def list_turns(self, limit: int = 50) -> list[TurnRecord]:
        """Newest turns first, for logs and the dashboard."""
        return await self._fetch("SELECT * FROM turns ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,))

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[TurnRecord]:
        self._db.row_factory = aiosqlite.Row
        async with self._db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [_record(row) for row in rows]


def _record(row: Any) -> TurnRecord:
    data = dict(row)
    data["timings"] = json.loads(data["timings"])
    data["interrupted"] = bool(data["interrupted"])
    return TurnRecord(**data)
