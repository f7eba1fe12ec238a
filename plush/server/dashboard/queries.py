"""Read-only questions the dashboard asks the turn log: filtered pages of turns, full-text search, turns newer
than the last one shown (the live log), per-device summaries, chart series and Gemini use per day.

They run on a connection of their own, opened read-only, so a chart over a week of turns never queues in front of
a turn being stored: on the server's SQLite file (WAL lets it read while the server writes) by `SqliteTurnLog`
here, or on the PostgreSQL database the replicas share by `PostgresTurnLog` (queries_postgres.py). The questions
are written once, in `TurnLog`; each engine says how it numbers rows (the live log's cursor), finds words (FTS5
here, PostgreSQL's own text search there) and sends parameters. Changes (facts, resets) go through the server's
`Store` like any other caller's.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from plush.errors import PlushError
from plush.server.llm.gemini_budget import REQUESTS_KEY
from plush.server.store import TurnRecord
from plush.server.store.turn_rows import fts_query, turn_columns, turn_from_row

ERROR_OUTCOMES = ("error", "refused")


@dataclass(frozen=True)
class TurnFilter:
    """What the live log shows: every field empty shows every turn."""

    source: str = ""
    device: str = ""
    backend: str = ""
    errors_only: bool = False
    flagged_only: bool = False
    """Only turns the child-safety check stopped (outcome `blocked`), for the parent."""
    reason: str = ""
    """How or why turns ended (`TurnRecord.reason`): an outcome (`blocked`, `interrupted`...), a safety category
    (`self_harm`, `HARM_CATEGORY_HARASSMENT`) or an interruption's ending (`barge_in`, `revoked`...)."""
    text: str = ""
    """Full-text search over what was said and answered (each word a prefix, all words needed)."""

    def where(self, dialect: TurnLog, alias: str = "t") -> tuple[str, list[Any]]:
        """The filter as a SQL condition on the turns table under `alias`, in the SQL of `dialect`'s engine, and
        its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("source", self.source), ("device_id", self.device), ("backend", self.backend)):
            if value:
                clauses.append(f"{alias}.{column} = ?")
                params.append(value)
        if self.errors_only:
            clauses.append(f"({alias}.error != '' OR {alias}.outcome IN ('error', 'refused'))")
        if self.flagged_only:
            clauses.append(f"({alias}.outcome = 'blocked' OR {alias}.safety != '')")
        if self.reason:
            category = dialect.after_colon(f"{alias}.safety")
            clauses.append(f"({alias}.outcome = ? OR {alias}.ending = ? OR ({alias}.safety != '' AND {category} = ?))")
            params.extend([self.reason] * 3)
        if found := dialect.words_match(alias, self.text.split()[:MOST_WORDS]):
            clauses.append(found[0])
            params.append(found[1])
        return (" AND ".join(clauses) or "1 = 1"), params


MOST_WORDS = 12
"""Words of a search that count (the first ones)."""


@dataclass(frozen=True)
class LoggedTurn:
    """A turn as the log holds it, with its row number (the live log's cursor)."""

    rowid: int
    record: TurnRecord


class TurnLog(ABC):
    """Read-only access to the server's database; `await TurnLog.open(location)` picks the engine."""

    ROW: ClassVar[str]
    """The column that numbers turns in the order they were stored (the live log's cursor)."""

    @classmethod
    async def open(cls, location: Path | str) -> TurnLog:
        """The log of the database at `location`: a SQLite file, or a `postgresql://` URL."""
        if "://" in str(location):
            try:
                from plush.server.dashboard.queries_postgres import PostgresTurnLog
            except ImportError as exc:
                raise PlushError("the dashboard reads a PostgreSQL database: pip install 'plush[postgres]'") from exc
            return await PostgresTurnLog.connect(str(location))
        return await SqliteTurnLog.connect(Path(location))

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one query (parameters as `?`) to its end."""

    def after_colon(self, column: str) -> str:
        """An expression: the text of `column` after its first ':' (a safety verdict's category)."""
        return f"substr({column}, instr({column}, ':') + 1)"

    @abstractmethod
    def words_match(self, alias: str, words: list[str]) -> tuple[str, Any] | None:
        """A condition that holds when the turn has every word (each a prefix), and its parameter; None when no
        word has anything to match."""

    async def turns(self, where: TurnFilter, *, before: int | None = None, limit: int = 50) -> list[LoggedTurn]:
        """Newest first; `before` is a row number to page back from."""
        sql, params = where.where(self)
        if before is not None:
            sql += f" AND t.{self.ROW} < ?"
            params.append(before)
        return await self._turns(
            f"SELECT {self._prefixed()} FROM turns t WHERE {sql} ORDER BY t.{self.ROW} DESC LIMIT ?", (*params, limit)
        )

    async def turns_after(
        self, rowid: int, where: TurnFilter, *, upto: int | None = None, limit: int = 100
    ) -> list[LoggedTurn]:
        """Turns stored after row `rowid` (and up to row `upto`), oldest first: what the live log has not shown."""
        sql, params = where.where(self)
        if upto is not None:
            sql += f" AND t.{self.ROW} <= ?"
            params.append(upto)
        return await self._turns(
            f"SELECT {self._prefixed()} FROM turns t WHERE t.{self.ROW} > ? AND {sql} ORDER BY t.{self.ROW} LIMIT ?",
            (rowid, *params, limit),
        )

    async def last_rowid(self) -> int:
        return int(await self._value(f"SELECT COALESCE(MAX({self.ROW}), 0) FROM turns", ()))

    async def turn(self, turn_id: str) -> LoggedTurn | None:
        found = await self._turns(f"SELECT {self._prefixed()} FROM turns t WHERE t.id = ?", (turn_id,))
        return found[0] if found else None

    async def choices(self) -> dict[str, list[str]]:
        """The sources, devices, backends and reasons the log holds (the filters' options)."""
        result: dict[str, list[str]] = {}
        for name, column in (("sources", "source"), ("devices", "device_id"), ("backends", "backend")):
            rows = await self._rows(f"SELECT DISTINCT {column} FROM turns WHERE {column} != '' ORDER BY 1", ())
            result[name] = [row[0] for row in rows]
        result["reasons"] = await self._reasons()
        return result

    async def _reasons(self) -> list[str]:
        """Every outcome but `answered`, then every safety category and ending, as the reason filter offers them."""
        outcomes: set[str] = set()
        reasons: set[str] = set()
        for outcome, ending, safety in await self._rows(
            "SELECT DISTINCT outcome, ending, safety FROM turns WHERE outcome != 'answered' OR safety != ''", ()
        ):
            outcomes.add(outcome)
            reasons.update(r for r in (ending, safety.partition(":")[2]) if r)
        return sorted(outcomes) + sorted(reasons - outcomes)

    async def since(self, moment: float) -> list[TurnRecord]:
        """Every turn started after `moment`, oldest first (the charts' data)."""
        rows = await self._turns(
            f"SELECT {self._prefixed()} FROM turns t WHERE t.started_at >= ? ORDER BY t.{self.ROW}", (moment,)
        )
        return [row.record for row in rows]

    async def devices(self, errors_per_device: int = 3) -> dict[str, dict[str, Any]]:
        """device id -> turns, last turn time and its most recent errors, from the whole log."""
        summary: dict[str, dict[str, Any]] = {}
        for row in await self._rows(
            "SELECT device_id, COUNT(*) AS turns, MAX(started_at) AS last FROM turns GROUP BY device_id", ()
        ):
            summary[row["device_id"]] = {"turns": row["turns"], "last_turn_at": row["last"], "errors": []}
        for device, info in summary.items():
            info["errors"] = [
                {"turn_id": r["id"], "at": r["started_at"], "error": r["error"] or r["outcome"]}
                for r in await self._rows(
                    "SELECT id, started_at, error, outcome FROM turns WHERE device_id = ?"
                    f" AND (error != '' OR outcome IN ('error', 'refused')) ORDER BY {self.ROW} DESC LIMIT ?",
                    (device, errors_per_device),
                )
            ]
        return summary

    async def gemini_days(self, days: int = 14) -> list[tuple[str, int]]:
        """(Pacific day, Gemini requests) for the last `days` days that counted any, oldest first."""
        rows = await self._rows(
            "SELECT day, count FROM usage_counters WHERE key = ? ORDER BY day DESC LIMIT ?", (REQUESTS_KEY, days)
        )
        return [(row[0], int(row[1])) for row in rows][::-1]

    async def gemini_clients(self, day: str) -> list[tuple[str, int]]:
        """(client, requests) on `day`, most first."""
        rows = await self._rows(
            "SELECT key, count FROM usage_counters WHERE day = ? AND key LIKE ? ORDER BY count DESC",
            (day, REQUESTS_KEY + ":%"),
        )
        return [(row[0].removeprefix(REQUESTS_KEY + ":"), int(row[1])) for row in rows]

    async def gemini_last_minute(self, now: float | None = None) -> tuple[int, int]:
        """(requests, tokens) Gemini answered in the last minute, from the turn log."""
        rows = await self._rows(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens + output_tokens), 0) FROM turns"
            " WHERE backend = 'gemini' AND started_at >= ?",
            ((now or time.time()) - 60,),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def _value(self, sql: str, params: tuple[Any, ...]) -> Any:
        rows = await self._rows(sql, params)
        return rows[0][0] if rows else None

    async def _turns(self, sql: str, params: tuple[Any, ...]) -> list[LoggedTurn]:
        return [LoggedTurn(int(row["rowid"]), turn_from_row(row)) for row in await self._rows(sql, params)]

    def _prefixed(self) -> str:
        return f"t.{self.ROW} AS rowid, " + turn_columns("t")


class SqliteTurnLog(TurnLog):
    """The log of a SQLite file, on a read-only connection of its own."""

    ROW = "rowid"

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def connect(cls, path: Path) -> SqliteTurnLog:
        db = await aiosqlite.connect(_read_only_uri(path), uri=True)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout=5000")
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params))

    def words_match(self, alias: str, words: list[str]) -> tuple[str, Any] | None:
        query = fts_query(words, operator="AND")
        if not query:
            return None
        return f"{alias}.id IN (SELECT turn_id FROM turns_fts WHERE turns_fts MATCH ?)", query


def _read_only_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"
