"""Storage: every turn with its timings, conversation memory, long-term facts and usage counters."""

from server.store.base import Store
from server.store.records import Conversation, Fact, StoreError, TurnRecord

__all__ = ["Conversation", "Fact", "Store", "StoreError", "TurnRecord"]
