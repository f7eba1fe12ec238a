"""Storage: every turn with its timings, conversation memory, long-term facts and usage counters."""

from plush.server.store.base import Store
from plush.server.store.records import Conversation, Fact, StoreError, TurnRecord

__all__ = ["Conversation", "Fact", "Store", "StoreError", "TurnRecord"]
