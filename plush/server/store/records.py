"""What the store holds, as plain dataclasses shared by every storage backend and its callers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from plush.errors import PlushError


class StoreError(PlushError):
    """The database cannot be opened, migrated or written."""


@dataclass
class TurnRecord:
    """One exchange: what the owner said, what the companion answered, and how it went."""

    id: str
    conversation_id: str
    device_id: str
    source: str
    """"device" (spoken to the plush), "chat" (text) or "telegram"."""
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


@dataclass(frozen=True)
class Fact:
    """Something the owner asked the companion to remember; every conversation's prompt carries it."""

    id: int
    text: str
    created_at: float
    source: str
    """The conversation it was told in ("device:plush-1", "cli", ...)."""


@dataclass(frozen=True)
class Conversation:
    """A memory thread: one plush, one Telegram chat, one text client."""

    id: str
    turns: int
    last_turn_at: float
    reset_at: float
    """Turns before this moment are out of the conversation's window (0: never reset)."""
