"""How long each string a client sends may be, checked in one place for every request of the contract.

Whatever a client writes into a string field may end up in the turn log, a prompt or a log line, so none is
unbounded: a TurnStart whose `language` was 262,144 characters long was once stored whole. Fields without an entry
here get `DEFAULT_CHARS`. A request over a limit is refused with INVALID_ARGUMENT, naming the field and its limit.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CHARS = 256
LIMITS: dict[str, int] = {
    "TurnStart.conversation_id": 128,
    "TurnStart.language": 16,
    "Transcript.text": 4000,
    "Transcript.language": 16,
    "Cancel.reason": 200,
    "ChatRequest.text": 4000,
    "ChatRequest.conversation_id": 128,
}
"""`Message.field` -> the most characters it may hold (ChatRequest.text's limit is also `service.MAX_CHAT_CHARS`)."""


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
