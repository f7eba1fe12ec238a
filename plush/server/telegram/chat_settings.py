"""Each chat's choice of text, voice or both (/voice), kept across restarts in a small JSON file.

A JSON file rather than a table: it is a handful of chats, read once at start and written on the rare /voice,
and it stays readable (and editable) by the owner. It is written whole to a temporary file and renamed, so a
crash mid-write never loses the other chats' choices. Replicas on one Redis (`share`) keep the choices in a
hash there too: a chat's choice made through one replica is what every other one answers with, read again
(`refresh`) as each message comes in.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

from plush.logs import get_logger

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)
ReplyMode = Literal["auto", "text", "voice", "both"]
MODES: tuple[str, ...] = get_args(ReplyMode)


class ChatSettings:
    """Reply mode per chat id; `default` for chats that never chose."""

    def __init__(self, path: Path, default: ReplyMode = "auto") -> None:
        self.path = path
        self.default = default
        self._modes: dict[str, ReplyMode] = {}
        self._shared: SharedState | None = None
        self._key = ""
        self._said_unreachable = False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self._modes = {str(chat): cast(ReplyMode, mode) for chat, mode in data.items() if mode in MODES}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:  # unreadable: start fresh, keep the file for a look
            log.warning("telegram_chat_settings_unreadable", path=str(path), error=str(exc))

    def share(self, shared: SharedState, key: str) -> None:
        """Keep the choices in the replicas' Redis too, under the hash `key`."""
        self._shared, self._key = shared, key

    async def refresh(self) -> None:
        """Take the choices the replicas made (nothing without `share`; Redis away: the ones known here)."""
        if self._shared is None:
            return
        try:
            async with asyncio.timeout(2.0):
                stored = await self._shared.client.hgetall(self._key)  # type: ignore[misc]
        except Exception as exc:
            self._unreachable(exc)
            return
        for chat, mode in ((_text(c), _text(m)) for c, m in stored.items()):
            if mode in MODES:
                self._modes[chat] = cast(ReplyMode, mode)

    async def choose(self, chat_id: int, mode: ReplyMode) -> None:
        """`chat_id` answers with `mode` from now on, on every replica."""
        self.set_mode(chat_id, mode)
        if self._shared is None:
            return
        try:
            async with asyncio.timeout(2.0):
                await self._shared.client.hset(self._key, str(chat_id), mode)  # type: ignore[misc]
        except Exception as exc:
            self._unreachable(exc)

    def _unreachable(self, exc: BaseException) -> None:
        if not self._said_unreachable:
            self._said_unreachable = True
            log.warning("telegram_chat_settings_unshared", error=str(exc) or type(exc).__name__)

    def mode(self, chat_id: int) -> ReplyMode:
        return self._modes.get(str(chat_id), self.default)

    def set_mode(self, chat_id: int, mode: ReplyMode) -> None:
        self._modes[str(chat_id)] = mode
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self._modes, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.path)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def answers_with(mode: ReplyMode, *, voice_in: bool) -> tuple[bool, bool]:
    """(text, voice): how a reply goes out in `mode`, for a message that was a voice note or not."""
    if mode == "auto":
        return (not voice_in, voice_in)
    return (mode in ("text", "both"), mode in ("voice", "both"))
