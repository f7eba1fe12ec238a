"""`plush chat`: talk to the companion in text over the Chat RPC, interactively or from a pipe."""

from __future__ import annotations

import sys
from typing import TextIO

from plush.device.client import CompanionClient


async def chat_loop(
    client: CompanionClient,
    *,
    lines: TextIO,
    out: TextIO,
    show_backend: bool,
    conversation_id: str,
    interactive: bool,
) -> int:
    """Send each non-empty input line, print the reply as it streams; returns how many turns were answered."""
    answered = 0
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        out.write("plush> ")
        backend = reason = ""
        async for event in client.chat(text, conversation_id=conversation_id):
            kind = event.WhichOneof("kind")
            if kind == "text_delta":
                out.write(event.text_delta.text)
                out.flush()
            elif kind == "error":
                sys.stderr.write(f"\n[error: {event.error.message}]")
            elif kind == "done":
                backend, reason = event.done.backend, event.done.backend_reason
        if show_backend:
            out.write(f"  [{backend}: {reason}]")
        out.write("\n")
        out.flush()
        answered += 1
    return answered
