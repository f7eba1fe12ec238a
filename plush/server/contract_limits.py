"""How long each string a client sends may be, checked in one place for every request of the contract.

Whatever a client writes into a string field may end up in the turn log, a prompt or a log line, so none is
unbounded: a TurnStart whose `language` was 262,144 characters long was once stored whole. Fields without an entry
here get `DEFAULT_CHARS`. A request over a limit is refused with INVALID_ARGUMENT, naming the field and its limit.

A request that does not decode at all (corrupt wire format, bad UTF-8 in a string) would fail inside grpc's own
deserializer, which answers UNKNOWN (first message, or any unary call) or breaks the stream mid-turn (INTERNAL,
with a traceback in the log). So the service is registered with `lenient` deserializers: they hand the handler
an `Undecodable` instead, and the handler refuses it with INVALID_ARGUMENT like any other contract mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

DEFAULT_CHARS = 256
MAX_INPUT_CHARS = 4000
"""The most characters of text any face may hand the brain as one message: a Chat's text and a Converse transcript
here, and what other faces (the Telegram bridge) pass to the companion. One limit, so no path stores a message a
later prompt cannot carry (a 100,000-character transcript once broke every turn of its conversation after it);
`Memory.prompt` cuts a longer one as the last guard."""
LIMITS: dict[str, int] = {
    "TurnStart.conversation_id": 128,
    "TurnStart.language": 16,
    "Transcript.text": MAX_INPUT_CHARS,
    "Transcript.language": 16,
    "Settled.text": MAX_INPUT_CHARS,
    "Settled.language": 16,
    "Cancel.reason": 200,
    "ChatRequest.text": MAX_INPUT_CHARS,
    "ChatRequest.conversation_id": 128,
}
"""`Message.field` -> the most characters it may hold (`service.MAX_CHAT_CHARS` and `utterance.MAX_CONVERSATION_ID`
are read from here)."""


def string_problem(message: Any) -> str | None:
    """The first string field of `message` (or of a message inside it) over its limit, said plainly; or None."""
    for field, value in message.ListFields():
        if isinstance(value, str):
            name = f"{message.DESCRIPTOR.name}.{field.name}"
            limit = LIMITS.get(name, DEFAULT_CHARS)
            if len(value) > limit:
                return f"{name} is {len(value)} characters; at most {limit}"
        elif hasattr(value, "ListFields") and (problem := string_problem(value)):
            return problem
    return None


@dataclass(frozen=True)
class Undecodable:
    """A request grpc received but that is not a valid `kind` message; `error` says why."""

    kind: str
    error: str

    @property
    def problem(self) -> str:
        return f"a {self.kind} that does not decode: {self.error}"


def lenient(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns an `Undecodable` for bytes that are not a `message_type`."""

    def deserialize(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(message_type.DESCRIPTOR.name, str(exc))

    return deserialize
