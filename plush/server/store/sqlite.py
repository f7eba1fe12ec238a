"""The SQLite store (the default): WAL mode through aiosqlite, so the event loop never blocks on disk.

The schema is versioned with `PRAGMA user_version` and a list of migrations applied in order, each in one
transaction. Recall of older turns uses an FTS5 index kept in step with `turns` by triggers and keyed by the
turn's id (not its rowid, which VACUUM may renumber); the `unicode61` tokenizer splits on spaces and
punctuation, and prefix queries ("토끼*", "rabbit*") let a Korean stem match its particle forms (토끼를, 토끼가)
and an English one its plural.

Every turn shares the one connection, so its transaction too. Each change runs in `_transaction`: its
statements and their commit under one lock (no turn's commit lands between another's statements), each
statement run to its end in one call (a write left half-stepped, as `INSERT ... RETURNING` is between its
execute and its fetch, makes any other commit fail with "SQL statements in progress": under load that lost
turns).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from plush.logs import get_logger
from plush.owners import LEGACY_OWNER
from plush.server.store.base import Store
from plush.server.store.records import (
    Conversation,
    Fact,
    Pairing,
    StoreError,
    TurnRecord,
    fact_text,
    under_way,
)
from plush.server.store.turn_rows import (
    CONVERSATIONS_QUERY,
    TURN_COLUMNS,
    conversation_from_row,
    ended,
    fts_query,
    turn_columns,
    turn_from_row,
    turn_values,
)

log = get_logger(__name__)
OWNER_MIGRATION = """
    -- Owners (plush/owners.py). A turn goes to the device that said it, alone ('device:<id>', what
    -- Owners.for_device gives a plush in no household): exact, and narrower than before. Facts were shown to
    -- every plush and nobody can tell whom each was meant for, so they go to 'legacy', which no prompt reads,
    -- until the server's owner gives each to someone (`plush memory move ID --owner OWNER`).
    ALTER TABLE turns ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    UPDATE turns SET owner = 'device:' || device_id;
    ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    UPDATE conversations SET owner = COALESCE(
        (SELECT t.owner FROM turns t WHERE t.conversation_id = conversations.id ORDER BY t.started_at LIMIT 1), ''
    );
    CREATE TABLE owned_facts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        UNIQUE (owner, text)
    );
    INSERT INTO owned_facts (id, owner, text, created_at, source)
        SELECT id, 'legacy', text, created_at, source FROM facts;
    -- Keep the id sequence, so the id of a forgotten fact is never given to another.
    DELETE FROM sqlite_sequence WHERE name = 'owned_facts';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'owned_facts', seq FROM sqlite_sequence WHERE name = 'facts';
    DROP TABLE facts;
    ALTER TABLE owned_facts RENAME TO facts;
"""
"""Facts and turns get their owner; see the comment at its top for what happens to older ones."""

OUTCOME_MIGRATION = """
    -- How each turn ended (records.Outcome). Older rows: interrupted ones were flagged, failed ones kept an error
    -- and no reply; the rest were answered (only turns that reached the brain were stored then).
    ALTER TABLE turns ADD COLUMN outcome TEXT NOT NULL DEFAULT 'answered';
    UPDATE turns SET outcome = CASE
        WHEN interrupted != 0 THEN 'interrupted'
        WHEN reply_text = '' AND error != '' THEN 'error'
        ELSE 'answered'
    END;
    -- A turn's conversation row is written by the turn's own INSERT, so one statement (atomic, whatever other
    -- writes share the connection) stores the conversation, the turn and its FTS row, or none of them.
    CREATE TRIGGER turns_conversation BEFORE INSERT ON turns BEGIN
        INSERT INTO conversations (id, created_at, owner) VALUES (new.conversation_id, new.started_at, new.owner)
            ON CONFLICT (id) DO UPDATE SET owner = excluded.owner WHERE conversations.owner = '';
    END;
"""
"""Turns get their outcome; storing a turn becomes one statement."""

SAFETY_MIGRATION = """
    ALTER TABLE turns ADD COLUMN safety TEXT NOT NULL DEFAULT '';
    ALTER TABLE turns ADD COLUMN ending TEXT NOT NULL DEFAULT ''
"""
"""Turns get the child-safety check's verdict (`where:category`, empty when nothing was flagged) and what stopped
an interrupted one (`TurnRecord.ending`)."""

VOICES_MIGRATION = """
    ALTER TABLE turns ADD COLUMN voices TEXT NOT NULL DEFAULT ''
"""
"""Turns say which voices spoke them (`TurnRecord.voices`): a Korean reply's Hangul goes to a Korean voice."""

SPECULATION_MIGRATION = """
    ALTER TABLE turns ADD COLUMN speculations INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN speculations_adopted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN speculations_wasted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN speculation_gemini_requests INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE turns ADD COLUMN speculation_gemini_wasted INTEGER NOT NULL DEFAULT 0
"""
"""Turns say what starting the brain before the release cost them (plush/server/speculation.py): speculations
started, adopted and wasted, and the Gemini requests they made and wasted."""

PAIRING_MIGRATION = """
    CREATE TABLE paired_plushes (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        paired_at TEXT NOT NULL DEFAULT ''
    )
"""
"""The paired plushes (plush/server/paired_plushes.py) move from a JSON file beside the database into the store,
so every replica on one database accepts a plush paired once; the server imports an older file at start."""

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
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        reset_at REAL NOT NULL DEFAULT 0
    );
    INSERT OR IGNORE INTO conversations (id, created_at)
        SELECT conversation_id, MIN(started_at) FROM turns GROUP BY conversation_id;
    CREATE TABLE facts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX turns_by_time ON turns (started_at);
    CREATE VIRTUAL TABLE turns_fts USING fts5(
        turn_id UNINDEXED, user_text, reply_text, tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO turns_fts (turn_id, user_text, reply_text) SELECT id, user_text, reply_text FROM turns;
    CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN
        INSERT INTO turns_fts (turn_id, user_text, reply_text) VALUES (new.id, new.user_text, new.reply_text);
    END;
    CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN
        DELETE FROM turns_fts WHERE turn_id = old.id;
    END;
    CREATE TRIGGER turns_fts_update AFTER UPDATE OF user_text, reply_text ON turns BEGIN
        DELETE FROM turns_fts WHERE turn_id = old.id;
        INSERT INTO turns_fts (turn_id, user_text, reply_text) VALUES (new.id, new.user_text, new.reply_text);
    END;
    """,
    OWNER_MIGRATION,
    OUTCOME_MIGRATION,
    SAFETY_MIGRATION,
    VOICES_MIGRATION,
    SPECULATION_MIGRATION,
    PAIRING_MIGRATION,
)
ADDED_COLUMNS: dict[str, str] = {
    column: definition.strip()
    for migration in MIGRATIONS
    for column, definition in re.findall(r"ALTER TABLE turns ADD COLUMN (\w+) ([^;\n]+)", migration)
}
"""Each column the migrations add to `turns`, with its definition (see `_add_missing_columns`)."""
_TURN_PLACEHOLDERS = ", ".join("?" * len(TURN_COLUMNS))


class SqliteStore(Store):
    """The store in one SQLite file."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._changing = asyncio.Lock()

    @classmethod
    async def connect(cls, path: Path) -> SqliteStore:
        """Open (creating) the database and bring its schema up to date."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, aiosqlite.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        db.row_factory = aiosqlite.Row
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
        version = await self.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer Plush (schema {version}, this one knows {len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
            except aiosqlite.Error:
                await self._db.rollback()
                raise
        await self._add_missing_columns()
        if version < MIGRATIONS.index(OWNER_MIGRATION) + 1 and (kept := await self.list_facts(LEGACY_OWNER)):
            log.warning(
                "facts_kept_for_no_one",
                facts=len(kept),
                hint="facts from before owners reach no plush until given one: "
                "`plush memory facts --owner legacy`, then `plush memory move ID --owner OWNER`",
            )

    async def _add_missing_columns(self) -> None:
        """Add any column a migration adds that the `turns` table lacks: a database migrated by a build whose
        migration later grew (a development checkout) is at the right version with a column short, and every
        turn would fail to store. Adding it (with the migration's own default) loses nothing."""
        async with self._db.execute("PRAGMA table_info(turns)") as cur:
            present = {row[1] for row in await cur.fetchall()}
        for column, definition in ADDED_COLUMNS.items():
            if column not in present:
                log.warning("store_column_added", column=column, hint="the database was migrated by another build")
                await self._db.execute(f"ALTER TABLE turns ADD COLUMN {column} {definition}")
                await self._db.commit()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self._db.close()

    # -- turns ---------------------------------------------------------------------------------------------------

    async def add_turn(self, turn: TurnRecord) -> None:
        # The INSERT's triggers write the conversation row and the FTS row (see OUTCOME_MIGRATION). The row the
        # turn had while under way goes in the same transaction, so a failed INSERT leaves that row as it was, and
        # the ended turn gets a new rowid: the live log, which follows rowids, shows it when it ends.
        # SQLite gives a new row the largest rowid + 1, which is the deleted row's own when it was the newest (one
        # turn in flight): the rowid is given past it, or the live log, already past it, never shows the end.
        async with self._transaction():
            under_way = await self._db.execute_fetchall(
                f"SELECT rowid FROM turns WHERE id = ? AND NOT ({ended()})", (turn.id,)
            )
            await self._db.execute(f"DELETE FROM turns WHERE id = ? AND NOT ({ended()})", (turn.id,))
            await self._db.execute(
                f"INSERT INTO turns (rowid, {turn_columns()}) VALUES"
                f" ((SELECT MAX(COALESCE(MAX(rowid), 0), ?) + 1 FROM turns), {_TURN_PLACEHOLDERS})",
                (next(iter(under_way), (0,))[0], *turn_values(turn)),
            )

    async def begin_turn(self, turn: TurnRecord) -> None:
        await self._change(
            f"INSERT INTO turns ({turn_columns()}) VALUES ({_TURN_PLACEHOLDERS}) ON CONFLICT (id) DO NOTHING",
            turn_values(under_way(turn)),
        )

    async def note_reply(self, turn_id: str, reply_text: str) -> bool:
        changed = await self._change(
            f"UPDATE turns SET reply_text = ? WHERE id = ? AND NOT ({ended()})", (reply_text, turn_id)
        )
        return changed > 0

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        rows = await self._turns(f"SELECT {turn_columns()} FROM turns WHERE id = ?", (turn_id,))
        return rows[0] if rows else None

    async def list_turns(self, limit: int = 50, *, conversation_id: str | None = None) -> list[TurnRecord]:
        where, params = ("WHERE conversation_id = ?", (conversation_id,)) if conversation_id else ("", ())
        return await self._turns(
            f"SELECT {turn_columns()} FROM turns {where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )

    async def recent_turns(self, conversation_id: str, limit: int, *, owner: str) -> list[TurnRecord]:
        if limit <= 0:
            return []
        rows = await self._turns(
            f"SELECT {turn_columns()} FROM turns WHERE conversation_id = ? AND owner = ? AND reply_text != ''"
            f" AND outcome != 'blocked' AND {ended()}"
            " AND started_at >= COALESCE((SELECT reset_at FROM conversations WHERE id = ?), 0)"
            " ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (conversation_id, owner, conversation_id, limit),
        )
        return rows[::-1]

    async def search_turns(
        self,
        terms: Sequence[str],
        *,
        limit: int,
        owner: str,
        conversation_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[TurnRecord]:
        query = fts_query(terms, operator="OR")  # any one term recalls a turn
        if not query or limit <= 0:
            return []
        sql = (
            f"SELECT {turn_columns('t')}"
            " FROM turns_fts JOIN turns t ON t.id = turns_fts.turn_id"
            " WHERE turns_fts MATCH ? AND t.owner = ? AND t.reply_text != '' AND t.outcome != 'blocked'"
            f" AND {ended('t')}"
        )
        params: list[Any] = [query, owner]
        if conversation_id is not None:
            sql += " AND t.conversation_id = ?"
            params.append(conversation_id)
        if exclude:
            sql += f" AND t.id NOT IN ({', '.join('?' * len(exclude))})"
            params.extend(exclude)
        sql += " ORDER BY bm25(turns_fts), t.started_at DESC LIMIT ?"
        params.append(limit)
        return await self._turns(sql, tuple(params))

    async def delete_turns_before(self, moment: float) -> int:
        return await self._change("DELETE FROM turns WHERE started_at < ?", (moment,))

    async def mark_failed(self, turn_id: str, error: str) -> bool:
        changed = await self._change(
            "UPDATE turns SET outcome = 'error',"
            " error = CASE WHEN error = '' THEN ?1 ELSE error || '; ' || ?1 END WHERE id = ?2",
            (error, turn_id),
        )
        return changed > 0

    # -- conversations -------------------------------------------------------------------------------------------

    async def add_timing(self, turn_id: str, stage: str, duration_ms: float) -> bool:
        changed = await self._change(
            "UPDATE turns SET timings = json_set(timings, ?, ?) WHERE id = ?",
            (f'$."{stage}"', round(duration_ms, 1), turn_id),
        )
        return changed > 0

    async def reset_conversation(self, conversation_id: str) -> None:
        now = time.time()
        await self._change(
            "INSERT INTO conversations (id, created_at, reset_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET reset_at = excluded.reset_at",
            (conversation_id, now, now),
        )

    async def list_conversations(self) -> list[Conversation]:
        return [conversation_from_row(row) for row in await self._db.execute_fetchall(CONVERSATIONS_QUERY)]

    # -- long-term facts -----------------------------------------------------------------------------------------

    async def add_fact(self, text: str, source: str, *, owner: str) -> Fact:
        text = fact_text(text, owner)
        await self._change(
            "INSERT OR IGNORE INTO facts (owner, text, created_at, source) VALUES (?, ?, ?, ?)",
            (owner, text, time.time(), source),
        )
        facts = await self._facts("WHERE owner = ? AND text = ?", (owner, text))
        return facts[0]

    async def list_facts(self, owner: str) -> list[Fact]:
        return await self._facts("WHERE owner = ?", (owner,))

    async def all_facts(self) -> list[Fact]:
        return await self._facts("", ())

    async def move_fact(self, fact_id: int, owner: str) -> Fact | None:
        found = await self._facts("WHERE id = ?", (fact_id,))
        if not found:
            return None
        # The new owner may already have the same fact: keep theirs, drop the moved copy.
        async with self._transaction():
            await self._db.execute("UPDATE OR IGNORE facts SET owner = ? WHERE id = ?", (owner, fact_id))
            await self._db.execute("DELETE FROM facts WHERE id = ? AND owner != ?", (fact_id, owner))
        return (await self._facts("WHERE owner = ? AND text = ?", (owner, found[0].text)))[0]

    async def remove_fact(self, fact_id: int) -> bool:
        return await self._change("DELETE FROM facts WHERE id = ?", (fact_id,)) > 0

    # -- usage counters ------------------------------------------------------------------------------------------

    async def add_usage(self, day: str, key: str, amount: int = 1) -> int:
        async with self._transaction():
            rows = list(
                await self._db.execute_fetchall(  # to its end in one call: see the module's docstring
                    "INSERT INTO usage_counters (day, key, count) VALUES (?, ?, ?)"
                    " ON CONFLICT (day, key) DO UPDATE SET count = count + excluded.count RETURNING count",
                    (day, key, amount),
                )
            )
        return int(rows[0][0]) if rows else amount

    async def usage(self, day: str, key: str) -> int:
        rows = list(
            await self._db.execute_fetchall("SELECT count FROM usage_counters WHERE day = ? AND key = ?", (day, key))
        )
        return int(rows[0][0]) if rows else 0

    # -- paired plushes ------------------------------------------------------------------------------------------

    async def add_pairing(self, pairing: Pairing, *, replace: bool = False) -> bool:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        changed = await self._change(
            f"{verb} INTO paired_plushes (name, token_sha256, paired_at) VALUES (?, ?, ?)",
            (pairing.name, pairing.token_sha256, pairing.paired_at),
        )
        return changed > 0

    async def remove_pairing(self, name: str) -> bool:
        return await self._change("DELETE FROM paired_plushes WHERE name = ?", (name,)) > 0

    async def pairings(self, name: str | None = None) -> list[Pairing]:
        where, params = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        rows = await self._db.execute_fetchall(
            f"SELECT name, token_sha256, paired_at FROM paired_plushes {where} ORDER BY name", params
        )
        return [Pairing(**dict(row)) for row in rows]

    async def _facts(self, where: str, params: tuple[Any, ...]) -> list[Fact]:
        sql = f"SELECT id, text, created_at, source, owner FROM facts {where} ORDER BY id"
        return [Fact(**dict(row)) for row in await self._db.execute_fetchall(sql, params)]

    async def _turns(self, sql: str, params: tuple[Any, ...]) -> list[TurnRecord]:
        return [turn_from_row(row) for row in await self._db.execute_fetchall(sql, params)]

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """The changes made inside, committed together, and alone: no other turn's commit lands between them."""
        async with self._changing:
            try:
                yield
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise

    async def _change(self, sql: str, params: Iterable[Any]) -> int:
        """Run one changing statement (no RETURNING) in its own transaction; the rows it changed."""
        async with self._transaction(), self._db.execute(sql, params) as cursor:
            return max(cursor.rowcount, 0)
