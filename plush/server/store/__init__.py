"""Storage: every turn with its timings, conversation memory, long-term facts and usage counters.

Callers import `Store` from here and open it with `await Store.open(location)`. This package, not the interface
in `base.py`, knows the backends: it registers SQLite for plain file paths (the default) and PostgreSQL for
`postgresql://` URLs (imported only when one is opened: asyncpg comes with `plush[postgres]`).
"""

from pathlib import Path

from plush.server.store.base import DEFAULT_SCHEME, Store
from plush.server.store.records import Conversation, Fact, Pairing, StoreError, TurnRecord
from plush.server.store.sqlite import SqliteStore


async def _open_sqlite(location: str) -> Store:
    return await SqliteStore.connect(Path(location))


async def _open_postgres(location: str) -> Store:
    try:
        from plush.server.store.postgres import PostgresStore
    except ImportError as exc:
        where = location.rsplit("@", maxsplit=1)[-1]
        raise StoreError(f"{where} is a PostgreSQL database: pip install 'plush[postgres]'") from exc
    return await PostgresStore.connect(location)


Store.register_backend(DEFAULT_SCHEME, _open_sqlite)
Store.register_backend("postgresql", _open_postgres)
Store.register_backend("postgres", _open_postgres)

__all__ = ["Conversation", "Fact", "Pairing", "Store", "StoreError", "TurnRecord"]
