"""Read-only questions the dashboard asks the turn log: filtered pages of turns, full-text search, turns newer
than the last one shown (the live log), per-device summaries, chart series and Gemini use per day.

They run on a connection of their own, opened read-only on the server's SQLite file (WAL lets it read while the
server writes), so a chart over a week of turns never queues in front of a turn being stored. Changes (facts,
resets) go through the server's `Store` like any other caller's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

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

    def where(self, alias: str = "t") -> tuple[str, list[Any]]:
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
            clauses.append(
                f"({alias}.outcome = ? OR {alias}.ending = ?"
                f" OR ({alias}.safety != '' AND substr({alias}.safety, instr({alias}.safety, ':') + 1) = ?))"
            )
            params.extend([self.reason] * 3)
        if query := fts_query(self.text.split(), operator="AND", most=12):
            clauses.append(f"{alias}.id IN (SELECT turn_id FROM turns_fts WHERE turns_fts MATCH ?)")
            params.append(query)
        return (" AND ".join(clauses) or "1"), params


@dataclass(frozen=True)
class LoggedTurn:
    """A turn as the log holds it, with its row number (the live log's cursor)."""

    rowid: int
    record: TurnRecord


class TurnLog:
    """Read-only access to the server's database."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> TurnLog:
        uri = _read_only_uri(path)
        db = await aiosqlite.connect(uri, uri=True)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout=5000")
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def turns(self, where: TurnFilter, *, before: int | None = None, limit: int = 50) -> list[LoggedTurn]:
        """Newest first; `before` is a row number to page back from."""
        sql, params = where.where()
        if before is not None:
            sql += " AND t.rowid < ?"
            params.append(before)
        return await self._turns(
            f"SELECT {_prefixed()} FROM turns t WHERE {sql} ORDER BY t.rowid DESC LIMIT ?", (*params, limit)
        )

    async def turns_after(
        self, rowid: int, where: TurnFilter, *, upto: int | None = None, limit: int = 100
    ) -> list[LoggedTurn]:
        """Turns stored after row `rowid` (and up to row `upto`), oldest first: what the live log has not shown."""
        sql, params = where.where()
        if upto is not None:
            sql += " AND t.rowid <= ?"
            params.append(upto)
        return await self._turns(
            f"SELECT {_prefixed()} FROM turns t WHERE t.rowid > ? AND {sql} ORDER BY t.rowid LIMIT ?",
            (rowid, *params, limit),
        )

    async def last_rowid(self) -> int:
        return int(await self._value("SELECT COALESCE(MAX(rowid), 0) FROM turns", ()))

    async def turn(self, turn_id: str) -> LoggedTurn | None:
        found = await self._turns(f"SELECT {_prefixed()} FROM turns t WHERE t.id = ?", (turn_id,))
        return found[0] if found else None

    async def choices(self) -> dict[str, list[str]]:
        """The sources, devices, backends and reasons the log holds (the filters' options)."""
        result: dict[str, list[str]] = {}
        for name, column in (("sources", "source"), ("devices", "device_id"), ("backends", "backend")):
            async with self._db.execute(f"SELECT DISTINCT {column} FROM turns WHERE {column} != '' ORDER BY 1") as c:
                result[name] = [row[0] for row in await c.fetchall()]
        result["reasons"] = await self._reasons()
        return result

    async def _reasons(self) -> list[str]:
        """Every outcome but `answered`, then every safety category and ending, as the reason filter offers them."""
        outcomes: set[str] = set()
        reasons: set[str] = set()
        async with self._db.execute(
            "SELECT DISTINCT outcome, ending, safety FROM turns WHERE outcome != 'answered' OR safety != ''"
        ) as cur:
            for outcome, ending, safety in await cur.fetchall():
                outcomes.add(outcome)
                reasons.update(r for r in (ending, safety.partition(":")[2]) if r)
        return sorted(outcomes) + sorted(reasons - outcomes)

    async def since(self, moment: float) -> list[TurnRecord]:
        """Every turn started after `moment`, oldest first (the charts' data)."""
        rows = await self._turns(
            f"SELECT {_prefixed()} FROM turns t WHERE t.started_at >= ? ORDER BY t.rowid", (moment,)
        )
        return [row.record for row in rows]

    async def devices(self, errors_per_device: int = 3) -> dict[str, dict[str, Any]]:
        """device id -> turns, last turn time and its most recent errors, from the whole log."""
        summary: dict[str, dict[str, Any]] = {}
        async with self._db.execute(
            "SELECT device_id, source, COUNT(*) AS turns, MAX(started_at) AS last FROM turns GROUP BY device_id"
        ) as cur:
            for row in await cur.fetchall():
                summary[row["device_id"]] = {"turns": row["turns"], "last_turn_at": row["last"], "errors": []}
        for device, info in summary.items():
            async with self._db.execute(
                "SELECT id, started_at, error, outcome FROM turns WHERE device_id = ?"
                " AND (error != '' OR outcome IN ('error', 'refused')) ORDER BY rowid DESC LIMIT ?",
                (device, errors_per_device),
            ) as cur:
                info["errors"] = [
                    {"turn_id": r["id"], "at": r["started_at"], "error": r["error"] or r["outcome"]}
                    for r in await cur.fetchall()
                ]
        return summary

    async def gemini_days(self, days: int = 14) -> list[tuple[str, int]]:
        """(Pacific day, Gemini requests) for the last `days` days that counted any, oldest first."""
        async with self._db.execute(
            "SELECT day, count FROM usage_counters WHERE key = ? ORDER BY day DESC LIMIT ?", (REQUESTS_KEY, days)
        ) as cur:
            return [(row[0], int(row[1])) for row in await cur.fetchall()][::-1]

    async def gemini_clients(self, day: str) -> list[tuple[str, int]]:
        """(client, requests) on `day`, most first."""
        async with self._db.execute(
            "SELECT key, count FROM usage_counters WHERE day = ? AND key LIKE ? ORDER BY count DESC",
            (day, REQUESTS_KEY + ":%"),
        ) as cur:
            return [(row[0].removeprefix(REQUESTS_KEY + ":"), int(row[1])) for row in await cur.fetchall()]

    async def gemini_last_minute(self, now: float | None = None) -> tuple[int, int]:
        """(requests, tokens) Gemini answered in the last minute, from the turn log."""
        async with self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens + output_tokens), 0) FROM turns"
            " WHERE backend = 'gemini' AND started_at >= ?",
            ((now or time.time()) - 60,),
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def _value(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def _turns(self, sql: str, params: tuple[Any, ...]) -> list[LoggedTurn]:
        async with self._db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [_logged(row) for row in rows]


def _read_only_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


def _prefixed() -> str:
    return "t.rowid, " + turn_columns("t")


def _logged(row: Any) -> LoggedTurn:
    return LoggedTurn(int(row["rowid"]), turn_from_row(row))
