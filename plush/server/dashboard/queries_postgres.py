"""The dashboard's read-only questions (`queries.TurnLog`) on the PostgreSQL database the replicas share.

A pool of its own, whose sessions are read-only (`default_transaction_read_only`), so the dashboard can never
change the store and a long chart query never holds a connection a turn needs. Turns are numbered by the `seq`
identity column (SQLite's rowid there), and words are found with PostgreSQL's own text search over the stored
`tsvector`, the same prefix terms as recall (`postgres.ts_query`), every word needed (`&`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg

from plush.config import hide_password
from plush.server.dashboard.queries import TurnLog
from plush.server.store import StoreError
from plush.server.store.postgres import ts_query

PLACEHOLDER = re.compile(r"\?")


class PostgresTurnLog(TurnLog):
    """The log of a PostgreSQL database, on a small read-only pool."""

    ROW = "seq"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresTurnLog:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=2,
                command_timeout=30,
                server_settings={"default_transaction_read_only": "on"},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreError(f"the dashboard cannot open the database {hide_password(url)}: {exc}") from exc
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        numbers = iter(range(1, len(params) + 1))
        return list(await self._pool.fetch(PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql), *params))

    def after_colon(self, column: str) -> str:
        return f"substr({column}, strpos({column}, ':') + 1)"

    def words_match(self, alias: str, words: list[str]) -> tuple[str, Any] | None:
        query = " & ".join(term for word in words if (term := ts_query([word])))
        if not query:
            return None
        return f"{alias}.search @@ to_tsquery('simple', ?)", query
