"""Messages kept from the moment they arrive until they are handled, so a crash in the middle of a reply loses none.

Telegram forgets an update once the bot has it: long polling confirms it with the next request's offset, a
webhook with its 200. python-telegram-bot does both as soon as the update is on its queue, before any handler
ran, so a server killed mid-reply would never see that message again. The inbox is that queue: `put` writes
the update to a file of its own (fsynced, then renamed into place) before it returns, so the offset moves on
only past updates already on disk. The file goes once the update has been handled (`InboxApplication`), and the
files a crash left behind are handled again at the next start, oldest first.

A message handled twice that way (the server died after storing the turn, before removing the file) is not
answered twice: its turn id comes from the chat and the message (`turn_id`), and the bridge skips a message whose
turn is already stored.

Why files, not the turn store: an update must be kept before it is understood (a voice note, a command, a
stranger's message), and the bot's own state already lives beside it (chats.json); one small file per message in
flight is what a crash can leave, and nothing else reads them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.ext import Application

from plush.logs import get_logger
from plush.server.store.records import TURN_ID_LENGTH

log = get_logger(__name__)


def turn_id(bot_id: int, chat_id: int, message_id: int) -> str:
    """The turn id of a Telegram message: the same for the same message however often it is handled."""
    return hashlib.sha256(f"telegram:{bot_id}:{chat_id}:{message_id}".encode()).hexdigest()[:TURN_ID_LENGTH]


class Inbox:
    """One JSON file per update not yet handled, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, update: Update) -> None:
        """Write `update` to disk for good (blocking: run it in a thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._path(update.update_id)
        partial = final.with_suffix(".part")
        with partial.open("w", encoding="utf-8") as file:
            file.write(update.to_json())
            file.flush()
            os.fsync(file.fileno())
        partial.replace(final)

    def done(self, update_id: int) -> None:
        """The update was handled (answered, refused or failed and stored): its file goes."""
        self._path(update_id).unlink(missing_ok=True)

    def left(self) -> list[dict[str, Any]]:
        """The updates a previous run received and never finished, oldest first (unreadable files are logged
        and set aside as `.bad`, never lost)."""
        if not self.folder.is_dir():
            return []
        kept: list[dict[str, Any]] = []
        for path in sorted(self.folder.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
            try:
                kept.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.error("telegram_inbox_unreadable", path=str(path), error=str(exc))
                path.replace(path.with_suffix(".bad"))
        return kept

    def _path(self, update_id: int) -> Path:
        return self.folder / f"{update_id}.json"


class InboxQueue(asyncio.Queue[object]):
    """python-telegram-bot's update queue, keeping each update on disk before the poller or webhook confirms it.

    With `claim` (replicas behind one webhook: telegram/replicas.py), an update another replica claimed first is
    dropped here, before it is kept or handled; `replay` puts back what this inbox kept, without a claim."""

    def __init__(self, inbox: Inbox, claim: Callable[[int], Awaitable[bool]] | None = None) -> None:
        super().__init__()
        self.inbox = inbox
        self.claim = claim

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            if self.claim is not None and not await self.claim(item.update_id):
                log.info("telegram_update_taken_elsewhere", update_id=item.update_id)
                return
            await asyncio.to_thread(self.inbox.keep, item)
        await super().put(item)

    async def replay(self, item: Update) -> None:
        """An update this inbox kept (a previous run's): claimed already, so queued as it is."""
        await super().put(item)


class InboxApplication(Application):  # type: ignore[type-arg]
    """The bot's Application: an update leaves the inbox once its handlers have run, however they ended."""

    async def process_update(self, update: object) -> None:
        try:
            await super().process_update(update)
        finally:
            if isinstance(update, Update) and isinstance(self.update_queue, InboxQueue):
                await asyncio.to_thread(self.update_queue.inbox.done, update.update_id)
