"""The PostgreSQL store, for several `plush server` replicas on one database (`postgresql://...` locations).

Why asyncpg: the store is async throughout and asyncpg is a native asyncio driver with its own connection pool
(each replica holds a few connections, every turn borrows one), maintained by MagicStack and shipped as wheels for
x86_64 and aarch64. Why no migration tool: the schema is small and already versioned by the SQLite store's list of
migrations; this engine follows it from the same definitions instead of keeping a second history:
- the turn's columns are `turn_rows.TURN_COLUMNS`; each column a SQLite migration adds (`sqlite.ADDED_COLUMNS`)
  is added here too, at start, with the same definition, so a new column is written once, in one migration;
- the version it reports is the SQLite migrations' count, so both engines say the same for the same schema;
- replicas starting together migrate one at a time, under a PostgreSQL advisory lock.

Full-text recall uses PostgreSQL's own text search: a stored `tsvector` of each turn's text with the `simple`
configuration (no stemming, no stop words, any language) and a GIN index, queried with prefix terms (`토끼:*`),
so a Korean stem matches its particle forms (토끼를, 토끼가) and an English word its plural, as the SQLite FTS5
index does. The database needs a UTF-8 encoding and locale (`initdb --locale=C.UTF-8`), or Hangul is not a word.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from plush.logs import get_logger
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
from plush.server.store.sqlite import ADDED_COLUMNS, MIGRATIONS
from plush.server.store.turn_rows import (
    CONVERSATIONS_QUERY,
    TURN_COLUMNS,
    conversation_from_row,
    ended,
    turn_columns,
    turn_from_row,
    turn_values,
)

log = get_logger(__name__)

RECONNECT_S = 15.0
"""How long a store call waits for the database to come back (a restart, a failover) before it fails."""
LOST_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx: the connection is gone or refused
    asyncpg.exceptions.AdminShutdownError,  # 57P01: the server is shutting down (a restart)
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    asyncpg.InterfaceError,  # "connection is closed": a pooled connection the restart closed under it
    asyncpg.exceptions.InternalClientError,  # a connection that died mid-statement, reused before the pool saw it
    OSError,  # connection refused or reset while it is down
)
"""What a database restart looks like to a pooled connection; the pool replaces the connection on the next try."""
_Result = TypeVar("_Result")


def reconnecting(call: Callable[..., Awaitable[_Result]]) -> Callable[..., Awaitable[_Result]]:
    """Retry `call` while the database is away (`LOST_CONNECTION`), for up to `RECONNECT_S`.

    Why: a PostgreSQL restart closes every pooled connection; without this, the next statement on each fails and
    a turn that the brain answered would fail with it (bench/cluster.py restarts PostgreSQL mid-run). Each call
    is one statement or one transaction, so a retry repeats nothing that committed, except a counter that was
    incremented just before its connection dropped (counted once more: a budget errs on the safe side)."""

    @functools.wraps(call)
    async def retried(*args: Any, **kwargs: Any) -> _Result:
        deadline = time.monotonic() + RECONNECT_S
        pause = 0.1
        while True:
            try:
                return await call(*args, **kwargs)
            except LOST_CONNECTION as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("database_away_retrying", call=call.__name__, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    return retried


MIGRATION_LOCK = 0x706C757368  # "plush": one replica migrates at a time
TURN_ORDER_LOCK = MIGRATION_LOCK + 1
"""Taken by each turn's INSERT until its commit, so turns commit in `seq` order (`_insert_turn`)."""
SCHEMA = """
    CREATE TABLE IF NOT EXISTS plush_schema (version INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        reset_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        owner TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE IF NOT EXISTS turns (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        source TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        user_text TEXT NOT NULL,
        reply_text TEXT NOT NULL,
        language TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL DEFAULT '',
        backend_reason TEXT NOT NULL DEFAULT '',
        timings TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        interrupted INTEGER NOT NULL DEFAULT 0,
        search TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', user_text || ' ' || reply_text)) STORED
    );
    CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, started_at);
    CREATE INDEX IF NOT EXISTS turns_by_time ON turns (started_at);
    CREATE INDEX IF NOT EXISTS turns_search ON turns USING GIN (search);
    CREATE TABLE IF NOT EXISTS facts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        owner TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        UNIQUE (owner, text)
    );
    CREATE TABLE IF NOT EXISTS usage_counters (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key)
    );
    CREATE TABLE IF NOT EXISTS paired_plushes (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        paired_at TEXT NOT NULL DEFAULT ''
    );
"""
"""The tables the SQLite migrations made (`paired_plushes`: `sqlite.PAIRING_MIGRATION`), written once for
PostgreSQL; the columns they add to `turns` come from `ADDED_COLUMNS`. A new table is added here too."""


def pg_definition(sqlite_definition: str) -> str:
    """A SQLite column definition as PostgreSQL writes it (`REAL` is a double there, a single float here)."""
    return sqlite_definition.replace("REAL", "DOUBLE PRECISION")


def ts_query(words: Sequence[str]) -> str:
    """A `to_tsquery('simple', ...)` text: each word a quoted prefix term (a user's word never becomes query
    syntax), any one of them enough (`|`); empty when no word has anything to match."""
    terms = ["'" + word.replace("'", "''").replace("\\", "\\\\") + "':*" for word in words if word.strip().strip("'")]
    return " | ".join(terms)


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${n}" for n in range(start, start + count))


class PostgresStore(Store):
    """The store in a PostgreSQL database, shared by every replica that opens the same URL."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        """Open a pool on `url` and bring the schema up to date (one replica at a time)."""
        shown = _without_password(url)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=8, command_timeout=30)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreError(f"cannot open the database {shown}: {exc}") from exc
        store = cls(pool, url)
        try:
            await store._migrate()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, StoreError) as exc:
            await pool.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot prepare the database {shown}: {exc}") from exc
        return store

    async def _migrate(self) -> None:
        async with self._pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(SCHEMA)
            present = {
                row["column_name"]
                for row in await db.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'turns'"
                    " AND table_schema = current_schema()"
                )
            }
            for column, definition in ADDED_COLUMNS.items():
                if column not in present:
                    await db.execute(f"ALTER TABLE turns ADD COLUMN {column} {pg_definition(definition)}")
            version = await db.fetchval("SELECT version FROM plush_schema")
            if version is None:
                await db.execute("INSERT INTO plush_schema (version) VALUES ($1)", len(MIGRATIONS))
            elif version > len(MIGRATIONS):
                raise StoreError(
                    f"the database was written by a newer Plush (schema {version}, this one knows {len(MIGRATIONS)})"
                )
            else:
                await db.execute("UPDATE plush_schema SET version = $1", len(MIGRATIONS))

    async def schema_version(self) -> int:
        return int(await self._pool.fetchval("SELECT version FROM plush_schema") or 0)

    async def close(self) -> None:
        await self._pool.close()

    # -- turns ---------------------------------------------------------------------------------------------------

    async def add_turn(self, turn: TurnRecord) -> None:
        # The row the turn had while under way goes in the same transaction (and the ended turn gets a new `seq`,
        # so it comes after the turns stored before it ended, as on SQLite).
        await self._insert_turn(turn, f"DELETE FROM turns WHERE id = $1 AND NOT ({ended()})")

    async def begin_turn(self, turn: TurnRecord) -> None:
        await self._insert_turn(under_way(turn), conflict=" ON CONFLICT (id) DO NOTHING")

    async def note_reply(self, turn_id: str, reply_text: str) -> bool:
        changed = await self._change(
            f"UPDATE turns SET reply_text = $1 WHERE id = $2 AND NOT ({ended()})", reply_text, turn_id
        )
        return changed > 0

    async def _insert_turn(self, turn: TurnRecord, before: str = "", *, conflict: str = "") -> None:
        """The turn and its conversation row in one transaction, after `before` (a statement on the turn's id).

        The row's `seq` is taken under `TURN_ORDER_LOCK`, held to the commit: replicas then commit turns in `seq`
        order, so a reader that sees a turn sees every turn numbered before it (the dashboard's live log follows
        `seq`; without the lock a turn numbered first but committed second, on another replica, was skipped)."""
        async with self._pool.acquire() as db, db.transaction():
            if before:
                await db.execute(before, turn.id)
            await db.execute(
                "INSERT INTO conversations (id, created_at, owner) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner WHERE conversations.owner = ''",
                turn.conversation_id,
                turn.started_at,
                turn.owner,
            )
            await db.execute("SELECT pg_advisory_xact_lock($1)", TURN_ORDER_LOCK)
            await db.execute(
                f"INSERT INTO turns ({turn_columns()}) VALUES ({_placeholders(len(TURN_COLUMNS))}){conflict}",
                *turn_values(turn),
            )

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        rows = await self._turns(f"SELECT {turn_columns()} FROM turns WHERE id = $1", turn_id)
        return rows[0] if rows else None

    async def list_turns(self, limit: int = 50, *, conversation_id: str | None = None) -> list[TurnRecord]:
        if conversation_id:
            return await self._turns(
                f"SELECT {turn_columns()} FROM turns WHERE conversation_id = $1"
                " ORDER BY started_at DESC, seq DESC LIMIT $2",
                conversation_id,
                limit,
            )
        return await self._turns(
            f"SELECT {turn_columns()} FROM turns ORDER BY started_at DESC, seq DESC LIMIT $1", limit
        )

    async def recent_turns(self, conversation_id: str, limit: int, *, owner: str) -> list[TurnRecord]:
        if limit <= 0:
            return []
        rows = await self._turns(
            f"SELECT {turn_columns()} FROM turns WHERE conversation_id = $1 AND owner = $2 AND reply_text != ''"
            f" AND outcome != 'blocked' AND {ended()}"
            " AND started_at >= COALESCE((SELECT reset_at FROM conversations WHERE id = $1), 0)"
            " ORDER BY started_at DESC, seq DESC LIMIT $3",
            conversation_id,
            owner,
            limit,
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
        query = ts_query(terms)
        if not query or limit <= 0:
            return []
        sql = (
            f"SELECT {turn_columns()} FROM turns, to_tsquery('simple', $1) AS q"
            f" WHERE search @@ q AND owner = $2 AND reply_text != '' AND outcome != 'blocked' AND {ended()}"
            " AND ($3::text IS NULL OR conversation_id = $3) AND NOT (id = ANY($4::text[]))"
            " ORDER BY ts_rank(search, q) DESC, started_at DESC LIMIT $5"
        )
        return await self._turns(sql, query, owner, conversation_id, list(exclude), limit)

    async def delete_turns_before(self, moment: float) -> int:
        return await self._change("DELETE FROM turns WHERE started_at < $1", moment)

    async def mark_failed(self, turn_id: str, error: str) -> bool:
        changed = await self._change(
            "UPDATE turns SET outcome = 'error',"
            " error = CASE WHEN error = '' THEN $1 ELSE error || '; ' || $1 END WHERE id = $2",
            error,
            turn_id,
        )
        return changed > 0

    async def add_timing(self, turn_id: str, stage: str, duration_ms: float) -> bool:
        changed = await self._change(
            "UPDATE turns SET timings = (timings::jsonb || jsonb_build_object($1::text, $2::float8))::text"
            " WHERE id = $3",
            stage,
            round(duration_ms, 1),
            turn_id,
        )
        return changed > 0

    # -- conversations -------------------------------------------------------------------------------------------

    async def reset_conversation(self, conversation_id: str) -> None:
        now = time.time()
        await self._change(
            "INSERT INTO conversations (id, created_at, reset_at) VALUES ($1, $2, $2)"
            " ON CONFLICT (id) DO UPDATE SET reset_at = excluded.reset_at",
            conversation_id,
            now,
        )

    async def list_conversations(self) -> list[Conversation]:
        return [conversation_from_row(row) for row in await self._pool.fetch(CONVERSATIONS_QUERY)]

    # -- long-term facts -----------------------------------------------------------------------------------------

    async def add_fact(self, text: str, source: str, *, owner: str) -> Fact:
        text = fact_text(text, owner)
        await self._change(
            "INSERT INTO facts (owner, text, created_at, source) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (owner, text) DO NOTHING",
            owner,
            text,
            time.time(),
            source,
        )
        return (await self._facts("WHERE owner = $1 AND text = $2", owner, text))[0]

    async def list_facts(self, owner: str) -> list[Fact]:
        return await self._facts("WHERE owner = $1", owner)

    async def all_facts(self) -> list[Fact]:
        return await self._facts("")

    async def move_fact(self, fact_id: int, owner: str) -> Fact | None:
        found = await self._facts("WHERE id = $1", fact_id)
        if not found:
            return None
        # The new owner may already have the same fact: keep theirs, drop the moved copy.
        async with self._pool.acquire() as db, db.transaction():
            taken = await db.fetchval(
                "SELECT 1 FROM facts WHERE owner = $1 AND text = $2 AND id != $3", owner, found[0].text, fact_id
            )
            if taken:
                await db.execute("DELETE FROM facts WHERE id = $1", fact_id)
            else:
                await db.execute("UPDATE facts SET owner = $1 WHERE id = $2", owner, fact_id)
        return (await self._facts("WHERE owner = $1 AND text = $2", owner, found[0].text))[0]

    async def remove_fact(self, fact_id: int) -> bool:
        return await self._change("DELETE FROM facts WHERE id = $1", fact_id) > 0

    # -- usage counters ------------------------------------------------------------------------------------------

    async def add_usage(self, day: str, key: str, amount: int = 1) -> int:
        count = await self._pool.fetchval(
            "INSERT INTO usage_counters (day, key, count) VALUES ($1, $2, $3)"
            " ON CONFLICT (day, key) DO UPDATE SET count = usage_counters.count + excluded.count RETURNING count",
            day,
            key,
            amount,
        )
        return int(count)

    async def usage(self, day: str, key: str) -> int:
        count = await self._pool.fetchval("SELECT count FROM usage_counters WHERE day = $1 AND key = $2", day, key)
        return int(count or 0)

    # -- paired plushes ------------------------------------------------------------------------------------------

    async def add_pairing(self, pairing: Pairing, *, replace: bool = False) -> bool:
        conflict = (
            "DO UPDATE SET token_sha256 = excluded.token_sha256, paired_at = excluded.paired_at"
            if replace
            else "DO NOTHING"
        )
        changed = await self._change(
            "INSERT INTO paired_plushes (name, token_sha256, paired_at) VALUES ($1, $2, $3)"
            f" ON CONFLICT (name) {conflict}",
            pairing.name,
            pairing.token_sha256,
            pairing.paired_at,
        )
        return changed > 0

    async def remove_pairing(self, name: str) -> bool:
        return await self._change("DELETE FROM paired_plushes WHERE name = $1", name) > 0

    async def pairings(self, name: str | None = None) -> list[Pairing]:
        rows = await self._pool.fetch(
            "SELECT name, token_sha256, paired_at FROM paired_plushes WHERE $1::text IS NULL OR name = $1"
            " ORDER BY name",
            name,
        )
        return [Pairing(**dict(row)) for row in rows]

    async def _facts(self, where: str, *params: Any) -> list[Fact]:
        rows = await self._pool.fetch(
            f"SELECT id, text, created_at, source, owner FROM facts {where} ORDER BY id", *params
        )
        return [Fact(**dict(row)) for row in rows]

    async def _turns(self, sql: str, *params: Any) -> list[TurnRecord]:
        return [turn_from_row(row) for row in await self._pool.fetch(sql, *params)]

    async def _change(self, sql: str, *params: Any) -> int:
        """Run one changing statement; the rows it changed (asyncpg's status tag ends with the count)."""
        status: str = await self._pool.execute(sql, *params)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


# Every public call of the store waits out a database restart (the private helpers run inside them: one retry
# loop per call, not one per level).
for _name, _method in list(vars(PostgresStore).items()):
    if _name not in {"connect", "close"} and not _name.startswith("_") and asyncio.iscoroutinefunction(_method):
        setattr(PostgresStore, _name, reconnecting(_method))


def _without_password(url: str) -> str:
    """The URL for messages: user and host, never the password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}@{host}"
