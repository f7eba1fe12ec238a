"""Each chat's choice of text, voice or both (/voice), kept across restarts in a small JSON file.

A JSON file rather than a table: it is a handful of chats, read once at start and written on the rare /voice,
and it stays readable (and editable) by the owner. It is written whole to a temporary file and renamed, so a
crash mid-write never loses the other chats' choices.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, cast, get_args

from plush.logs import get_logger

log = get_logger(__name__)
ReplyMode = Literal["auto", "text", "voice", "both"]
MODES: tuple[str, ...] = get_args(ReplyMode)


class ChatSettings:
    """Reply mode per chat id; `default` for chats that never chose."""

    def __init__(self, path: Path, default: ReplyMode = "auto") -> None:
        self.path = path
        self.default = default
        self._modes: dict[str, ReplyMode] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self._modes = {str(chat): cast(ReplyMode, mode) for chat, mode in data.items() if mode in MODES}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:  # unreadable: start fresh, keep the file for a look
            log.warning("telegram_chat_settings_unreadable", path=str(path), error=str(exc))

    def mode(self, chat_id: int) -> ReplyMode:
        return self._modes.get(str(chat_id), self.default)

    def set_mode(self, chat_id: int, mode: ReplyMode) -> None:
        self._modes[str(chat_id)] = mode
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self._modes, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.path)


def answers_with(mode: ReplyMode, *, voice_in: bool) -> tuple[bool, bool]:
    """(text, voice): how a reply goes out in `mode`, for a message that was a voice note or not."""
    if mode == "auto":
        return (not voice_in, voice_in)
    return (mode in ("text", "both"), mode in ("voice", "both"))
