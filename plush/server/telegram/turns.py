"""One chat's turns: in the order they were sent, within the user's rate limit, answered as text, voice or both.

Order: the bot handles updates concurrently (one slow reply must not hold up another owner's chat), so each chat
keeps a line: a message waits for the one sent before it in the same chat, and none is dropped. The place in
line is taken synchronously when the handler starts, before anything can interleave.

Flood: each user may send `[telegram] rate_limit` messages; the ones over it get no LLM call, and the first of
them a single polite "slow down" (one per window, so a flood cannot make the bot flood back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from telegram.constants import ChatAction
from telegram.error import TelegramError

from plush.logs import get_logger
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.companion import Companion, TurnRequestData
from plush.server.telegram.delivery import best_effort, deliver
from plush.server.telegram.replies import StreamedReply

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)
VOICE_RATE = 48000
"""Telegram voice notes are 48 kHz Opus: the reply is synthesized straight at that rate."""


class ChatLine:
    """Per-chat FIFO: `async with line.turn(chat_id)` waits for that chat's earlier messages to be answered."""

    def __init__(self) -> None:
        self._tails: dict[int, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def turn(self, chat_id: int) -> AsyncIterator[None]:
        ahead = self._tails.get(chat_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat_id] = mine  # taken before the first await: the place in line is the arrival order
        try:
            if ahead is not None:
                await asyncio.shield(ahead)
            yield
        finally:
            mine.set_result(None)
            if self._tails.get(chat_id) is mine:
                del self._tails[chat_id]

    def busy(self) -> int:
        """Chats with a message being answered or waiting."""
        return len(self._tails)


class FloodGuard:
    """The per-user message budget, and the one "slow down" per window for those who exceed it: counted in this
    process, or with `shared` in the replicas' Redis (`limits`' Redis storage), so a user whose messages reach
    several replicas (behind a webhook) has one budget. A Redis that does not answer lets the message through."""

    def __init__(self, rate_limit: str, shared: SharedState | None = None) -> None:
        self.items = parse_many(rate_limit)
        storage: Storage = MemoryStorage()
        if shared is not None:
            storage = RedisStorage(
                f"async+{shared.url}",
                implementation="redispy",
                key_prefix=shared.key("telegram-flood"),
                connection_pool=shared.client.connection_pool,  # type: ignore[arg-type]  # limits types it narrowly
            )
        self._limiter = MovingWindowRateLimiter(storage)
        self._shared = shared

    async def admit(self, user_id: int) -> bool | None:
        """True: answer. False: over the limit, say "slow down" (once per window). None: over it, say nothing."""
        key = str(user_id)
        try:
            async with asyncio.timeout(2.0):
                if await self._all_hit(self.items, "telegram", key):
                    return True
                warn = await self._all_hit(self.items, "telegram-warned", key, whole=True)
        except Exception as exc:  # only the replicas' Redis can fail here
            if self._shared is None:
                raise
            log.warning("telegram_rate_limit_unshared", user_id=user_id, error=str(exc) or type(exc).__name__)
            return True
        return False if warn else None

    async def _all_hit(self, items: list[RateLimitItem], namespace: str, key: str, *, whole: bool = False) -> bool:
        """Whether every item takes one more hit (`whole`: its whole amount, so it passes once per window)."""
        for item in items:
            if not await self._limiter.hit(item, namespace, key, cost=item.amount if whole else 1):
                return False
        return True


async def answer(
    companion: Companion, bot: Any, chat_id: int, turn: TurnRequestData, *, text_out: bool, voice_out: bool
) -> None:
    """Run `turn` and deliver its reply: text streamed by edits, and/or one voice note of the whole reply.

    The typing indicator and the edits on the way never decide whether the message is answered. When the reply
    itself cannot be delivered (Telegram refused it at every try), the stored turn says so (`error`) and the
    reply is dropped with a log line: sending it minutes later, out of the conversation, would confuse more
    than it helps.
    """
    if voice_out:
        turn.want_audio, turn.output_sample_rate = True, VOICE_RATE
        turn.output_encoding = pb.AUDIO_ENCODING_PCM_S16LE
    action = ChatAction.TYPING if text_out else ChatAction.RECORD_VOICE
    await best_effort(lambda: bot.send_chat_action(chat_id, action), what="sendChatAction")
    reply = StreamedReply(bot, chat_id) if text_out else None
    audio, said, problem = bytearray(), "", ""
    async with aclosing(companion.reply(turn)) as events:
        async for event in events:
            if event.HasField("text_delta"):
                said += event.text_delta.text
                if reply is not None:
                    await reply.add(event.text_delta.text)
            elif event.HasField("audio"):
                audio += event.audio.data
            elif event.HasField("error"):
                problem = event.error.message
    fallback = f"I could not answer just now ({problem})." if problem else "…"
    try:
        await _deliver_reply(bot, chat_id, turn, reply, audio=bytes(audio), text=said or fallback, voice_out=voice_out)
    except TelegramError as exc:
        error = f"Telegram did not take the reply at any try: {exc}"
        log.error("telegram_reply_undelivered", turn_id=turn.turn_id, chat_id=chat_id, error=str(exc))
        await companion.wait_stored()
        await companion.store.mark_failed(turn.turn_id, error)


async def _deliver_reply(
    bot: Any, chat_id: int, turn: TurnRequestData, reply: StreamedReply | None, *, audio: bytes, text: str,
    voice_out: bool,
) -> None:  # fmt: skip
    """The reply's last text edit and its voice note; TelegramError when either cannot be delivered."""
    from plush.voice_models.ogg_opus import encode_voice_note

    if reply is not None:
        await reply.finish(fallback=text)
    if not voice_out:
        return
    if not audio:  # nothing to say aloud (an error before any speech): say it in words instead
        if reply is None:
            await deliver(lambda: bot.send_message(chat_id, text), what="sendMessage")
        return
    samples = np.frombuffer(audio, dtype=np.int16)
    note = await asyncio.to_thread(encode_voice_note, samples, VOICE_RATE)
    await deliver(
        lambda: bot.send_voice(chat_id, voice=note.data, duration=note.duration_s, filename="reply.ogg"),
        what="sendVoice",
    )
    log.info("telegram_voice_sent", turn_id=turn.turn_id, chat_id=chat_id, seconds=round(note.seconds, 2))
