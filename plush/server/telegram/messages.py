"""Reply text cut to fit Telegram: a message holds at most 4,096 characters."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 4096


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at a paragraph, line or space break when one is near,
    so a long reply reads as several messages rather than one cut mid-word."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:  # no break in the second half: cut hard rather than send a tiny piece
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
