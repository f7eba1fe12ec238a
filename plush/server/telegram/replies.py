"""A reply that grows in the chat as the companion streams it: sent at the first text, then edited.

Telegram limits edits (about one a second per chat), so the message is edited at most every `edit_every_s`,
and once more at the end with the whole text. A reply longer than one message continues in new messages.
The edits on the way are side calls (a refused one is logged and made good by the next); only `finish`, which
must show the whole reply, raises when Telegram refuses it at every try.
"""

from __future__ import annotations

import time
from typing import Any

from telegram.error import TelegramError

from plush.logs import get_logger
from plush.server.telegram.delivery import deliver
from plush.server.telegram.messages import MAX_MESSAGE_CHARS, split_message

log = get_logger(__name__)
EDIT_EVERY_S = 1.0


class StreamedReply:
    """The text of one reply, mirrored into one chat message (and more when it outgrows one)."""

    def __init__(self, bot: Any, chat_id: int, *, edit_every_s: float = EDIT_EVERY_S) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.edit_every_s = edit_every_s
        self.text = ""
        self._message_ids: list[int] = []
        self._shown: list[str] = []
        """What each sent message shows now (the last may lag behind the text)."""
        self._last_edit = 0.0

    async def add(self, delta: str) -> None:
        """More of the reply; the chat shows it when the edit limit allows."""
        self.text += delta
        if time.monotonic() - self._last_edit >= self.edit_every_s:
            try:
                await self._show(split_message(self.text, MAX_MESSAGE_CHARS))
            except TelegramError as exc:
                log.warning("telegram_edit_failed", chat_id=self.chat_id, error=str(exc), hint="the next shows it")

    async def finish(self, *, fallback: str) -> None:
        """Show the whole reply (or `fallback` when there was none); TelegramError when Telegram would not."""
        pieces = split_message(self.text) or ([] if self._message_ids else [fallback])
        await self._show(pieces)

    async def _show(self, pieces: list[str]) -> None:
        self._last_edit = time.monotonic()
        for index, piece in enumerate(pieces):
            if index < len(self._message_ids):
                if self._shown[index] != piece:
                    await self._edit(index, piece)
            else:
                await self._send(piece)

    async def _send(self, piece: str) -> None:
        message = await deliver(lambda: self.bot.send_message(self.chat_id, piece), what="sendMessage")
        self._message_ids.append(message.message_id)
        self._shown.append(piece)

    async def _edit(self, index: int, piece: str) -> None:
        message_id = self._message_ids[index]
        await deliver(
            lambda: self.bot.edit_message_text(piece, chat_id=self.chat_id, message_id=message_id),
            what="editMessageText",
        )
        self._shown[index] = piece
