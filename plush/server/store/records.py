"""What the store holds, as plain dataclasses shared by every storage backend and its callers."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Literal

from plush.errors import PlushError
from plush.owners import device_owner


class StoreError(PlushError):
    """The database cannot be opened, migrated or written."""


TURN_ID_LENGTH = 12
"""Hex characters in a turn id (`TurnRecord.id`), however it was made."""


def new_turn_id() -> str:
    """A fresh, random turn id (a turn that has no id of its own to derive one from, as a Telegram message has)."""
    return uuid.uuid4().hex[:TURN_ID_LENGTH]


Outcome = Literal["answered", "interrupted", "abandoned", "no_speech", "refused", "blocked", "error"]
"""How a turn ended. answered: the reply was given in full (the fallback line included). interrupted: stopped
mid-reply (barge-in, the client hanging up, a newer turn, shutdown); `reply_text` keeps what was already said.
abandoned: the client left before TurnEnd (Cancel, a half-close, silence past `server.idle_timeout_s`).
no_speech: nothing was recognised in the audio. refused: the request broke the contract or a server limit.
blocked: the child-safety check stopped it (what was said, or a piece of the reply) and a calm line was said
instead; `safety` says where and why. error: the turn failed; `error` says why."""

ENDINGS: dict[str, str] = {
    "barge_in": "the owner pressed the button (the plush's Cancel)",
    "superseded": "a newer turn from the same plush replaced it",
    "shutdown": "the server was shutting down",
    "client_not_reading": "the client stopped reading the reply (server.idle_timeout_s)",
    "client_hung_up": "the client hung up",
    "revoked": "the plush's pairing was removed or its token revoked",
    "replica_lost": "the server replica serving it stopped before the turn ended (killed or crashed), or the turn"
    " is still under way",
}
"""What stopped an `interrupted` turn (`TurnRecord.ending`), each with the words the dashboard and /status use."""

REPLICA_LOST = "replica_lost"
"""The ending of a turn whose end no replica has stored: a turn is written so when it starts (`Store.begin_turn`),
and its end replaces that row; a replica that dies mid-turn leaves it as it is. No prompt reads such a turn (window
or recall): it may still be under way on another replica, and nobody knows how much of it was heard."""


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
    """Every problem met during the turn, "; "-separated (a TTS failure does not hide the LLM's)."""
    started_at: float = field(default_factory=time.time)
    prompt_tokens: int = 0
    output_tokens: int = 0
    """Counted by the backend's tokenizer (Gemini reports them; the local model's tokenizer counts the reply)."""
    outcome: Outcome = "answered"
    ending: str = ""
    """What stopped an `interrupted` turn: one of `ENDINGS`."""
    voices: str = ""
    """The voices that spoke the reply, ", "-separated (`en_US-joe-medium, espeak-ng ko (built-in fallback)`);
    empty for a reply not spoken."""
    safety: str = ""
    """Why the child-safety check stopped the turn, `where:category` (`input:self_harm`, `output:weapons`); empty
    when nothing was flagged. Blocked turns never go back into a prompt (window or recall)."""
    owner: str = ""
    """Whose turn it is (see plush/owners.py); empty means the device alone, `device:<device_id>`. Only this
    owner's prompts ever carry it (window and recall)."""
    speculations: int = 0
    """Speculative starts of the brain before the release (plush/server/speculation.py)."""
    speculations_adopted: int = 0
    """0 or 1: the reply is the speculation's."""
    speculations_wasted: int = 0
    speculation_gemini_requests: int = 0
    """Gemini requests the speculations made (the adopted one's included)."""
    speculation_gemini_wasted: int = 0
    """Gemini requests made by speculations that were not adopted: the cost of guessing wrong."""

    def __post_init__(self) -> None:
        self.owner = self.owner or device_owner(self.device_id)

    @property
    def interrupted(self) -> bool:
        """Stopped mid-reply (see `outcome`)."""
        return self.outcome == "interrupted"

    @property
    def reason(self) -> str:
        """Why the turn ended as it did, in the log's one vocabulary: the safety category of a `blocked` turn
        (`self_harm`, or what Gemini named, `HARM_CATEGORY_...`), the `ENDINGS` key of an `interrupted` one;
        empty for the others, whose `error` says it in words."""
        if self.outcome == "blocked":
            return self.safety.partition(":")[2] or self.safety
        if self.outcome == "interrupted":
            return self.ending
        return ""

    def add_error(self, message: str) -> None:
        """Keep `message` along with the errors already met (each once)."""
        if message and message not in self.error.split("; "):
            self.error = f"{self.error}; {message}" if self.error else message


def under_way(turn: TurnRecord) -> TurnRecord:
    """The turn as the store keeps it while it is under way: what it stays if its replica never ends it."""
    return replace(turn, outcome="interrupted", ending=REPLICA_LOST, timings=dict(turn.timings))


@dataclass(frozen=True)
class Fact:
    """Something an owner asked the companion to remember; every prompt of that owner (and no other) carries it."""

    id: int
    text: str
    created_at: float
    source: str
    """The conversation it was told in ("device:plush-1", "cli", ...)."""
    owner: str
    """Its owner: a household, `device:<id>`, or `legacy` (kept from before owners; no prompt carries it)."""


@dataclass(frozen=True)
class Pairing:
    """A plush paired with the server (`plush pair add`): its name and a hash of its token, never the token."""

    name: str
    token_sha256: str
    """SHA-256 of the token, hex: tokens are 256 random bits, so the hash cannot be guessed back."""
    paired_at: str
    """When it was paired, ISO 8601 in UTC ("" when not known)."""


@dataclass(frozen=True)
class Conversation:
    """A memory thread: one plush, one Telegram chat, one text client."""

    id: str
    turns: int
    last_turn_at: float
    reset_at: float
    """Turns before this moment are out of the conversation's window (0: never reset)."""
    owner: str = ""
    """The owner of its first turn ("" before it has one)."""


def fact_text(text: str, owner: str) -> str:
    """A fact's text as stored (spaces collapsed); StoreError for an empty text or no owner."""
    text = " ".join(text.split())
    if not text:
        raise StoreError("a fact needs some text")
    if not owner:
        raise StoreError("a fact needs an owner")
    return text
