"""Storage: every turn with its timings, conversation memory, long-term facts and usage counters.

Callers import `Store` from here and open it with `await Store.open(location)`. This package, not the interface
in `base.py`, knows the backends: it registers SQLite for plain file paths (the default).
"""

from pathlib import Path

from plush.server.store.base import DEFAULT_SCHEME, Store
from plush.server.store.records import Conversation, Fact, StoreError, TurnRecord
from plush.server.store.sqlite import SqliteStore


async def _open_sqlite(location: str) -> Store:
    return await SqliteStore.connect(Path(location))


Store.register_backend(DEFAULT_SCHEME, _open_sqlite)

__all__ = ["Conversation", "Fact", "Store", "StoreError", "TurnRecord"]
