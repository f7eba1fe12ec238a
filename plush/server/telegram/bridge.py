"""The bot: allowed users' messages become companion turns (source `telegram`), replies go back as they stream.

Private by default: only the user ids in `[telegram] allowed_users` get an answer. Anyone else gets nothing (no
reply, no typing indicator, no LLM call), and their id is logged once so an owner can add themselves. Updates are
handled one at a time, so a user's messages are answered in the order they were sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from telegram import BotCommand, Update
from telegram.constants import ChatAction
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from plush.config import TelegramConfig
from plush.logs import get_logger
from plush.owners import Owners, telegram_owner
from plush.server.companion import Companion, TurnRequestData
from plush.server.telegram.delivery import deliver
from plush.server.telegram.replies import StreamedReply

log = get_logger(__name__)
MAX_TEXT_CHARS = 4000
"""The longest message taken as one turn (a Telegram message holds 4,096 characters)."""
COMMANDS = (
    ("start", "Say hello"),
    ("help", "What I can do"),
    ("reset", "Start a new conversation"),
    ("remember", "Remember something: /remember TEXT"),
    ("forget", "Forget a fact: /forget ID (from /facts)"),
    ("facts", "What I remember about you"),
    ("status", "Which brain answers now"),
)
App = Application[Any, Any, Any, Any, Any, Any]


def mask_token(token: str) -> str:
    """The bot token as it may appear in logs and messages: only its last four characters."""
    return "****" + token[-4:]


def conversation_of(user_id: int) -> str:
    """The conversation a Telegram user's turns belong to: one per user, whatever chat they write from."""
    return telegram_owner(user_id)


class TelegramBridge:
    """Connects Telegram's long polling to a `Companion` (the same one the plush talks to)."""

    def __init__(self, companion: Companion, owners: Owners, settings: TelegramConfig) -> None:
        self.companion = companion
        self.owners = owners
        self.settings = settings
        self.allowed = frozenset(settings.allowed_users)
        self._strangers: set[int] = set()
        self._token = ""

    def application(self, token: str) -> App:
        """The python-telegram-bot application with Plush's handlers (not started)."""
        self._token = token
        app: App = Application.builder().token(token).base_url(self.settings.api_url).build()
        for name, handler in (
            ("start", self._start),
            ("help", self._help),
            ("reset", self._reset),
            ("remember", self._remember),
            ("forget", self._forget),
            ("facts", self._facts),
            ("status", self._status),
        ):
            app.add_handler(CommandHandler(name, handler))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._text))
        app.add_error_handler(self._failed)
        return app

    @asynccontextmanager
    async def polling(self, token: str, *, poll_timeout: int = 10) -> AsyncIterator[App]:
        """Run the bot (long polling) for the duration of the block; the command list is set at start."""
        app = self.application(token)
        async with app:
            await deliver(
                lambda: app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS]), what="setMyCommands"
            )
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(timeout=poll_timeout)
            log.info("telegram_started", bot=app.bot.username, token=mask_token(token), allowed=len(self.allowed))
            try:
                yield app
            finally:
                await app.updater.stop()
                await app.stop()

    async def _failed(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An update whose handling failed (Telegram unreachable past the retries): logged once, bot keeps going."""
        update_id = update.update_id if isinstance(update, Update) else None
        error = repr(context.error)
        if self._token:  # an error may quote the request's URL, which holds the token
            error = error.replace(self._token, mask_token(self._token))
        log.error("telegram_update_failed", update_id=update_id, error=error)

    def _user(self, update: Update) -> int | None:
        """The sender's id when they may use the bot; a stranger's id is logged once and None returned."""
        user = update.effective_user
        if user is None or update.effective_chat is None:
            return None
        if user.id in self.allowed:
            return user.id
        if user.id not in self._strangers:
            self._strangers.add(user.id)
            log.warning("telegram_stranger", user_id=user.id, hint="add it to [telegram] allowed_users to allow it")
        return None

    async def _say(self, update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
        assert update.effective_chat is not None
        chat_id = update.effective_chat.id
        await deliver(lambda: context.bot.send_message(chat_id, text), what="sendMessage")

    async def _text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message: one companion turn, its reply streamed into the chat."""
        user_id = self._user(update)
        if user_id is None or update.message is None or not (text := (update.message.text or "").strip()):
            return
        assert update.effective_chat is not None
        chat_id = update.effective_chat.id
        await deliver(lambda: context.bot.send_chat_action(chat_id, ChatAction.TYPING), what="sendChatAction")
        turn = TurnRequestData(
            turn_id=uuid.uuid4().hex[:12],
            conversation_id=conversation_of(user_id),
            device_id=telegram_owner(user_id),
            source="telegram",
            user_text=text[:MAX_TEXT_CHARS],
            want_audio=False,
            owner=self.owners.for_telegram_user(user_id),
        )
        reply = StreamedReply(context.bot, chat_id)
        problem = ""
        async with aclosing(self.companion.reply(turn)) as events:
            async for event in events:
                if event.HasField("text_delta"):
                    await reply.add(event.text_delta.text)
                elif event.HasField("error"):
                    problem = event.error.message
        await reply.finish(fallback=f"I could not answer just now ({problem})." if problem else "…")

    async def _start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self._user(update) is None:
            return
        name = self.companion.persona.name
        await self._say(update, context, f"Hello! I'm {name}. Write to me any time; /help shows what I can do.")

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self._user(update) is None:
            return
        lines = [f"/{name} - {description}" for name, description in COMMANDS]
        await self._say(update, context, "\n".join(lines))

    async def _reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A new conversation: earlier turns leave the prompt's window (facts stay)."""
        if (user_id := self._user(update)) is None:
            return
        await self.companion.store.reset_conversation(conversation_of(user_id))
        await self._say(update, context, "Fresh start! I remember the facts you told me, but not our chat.")

    async def _remember(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A fact for every later prompt of this user's owner (their household, or them alone)."""
        if (user_id := self._user(update)) is None:
            return
        text = " ".join(context.args or []).strip()
        if not text:
            await self._say(update, context, "Tell me what to remember: /remember my cat is called Momo")
            return
        owner = self.owners.for_telegram_user(user_id)
        fact = await self.companion.store.add_fact(text[:MAX_TEXT_CHARS], conversation_of(user_id), owner=owner)
        await self._say(update, context, f"I'll remember that (#{fact.id}).")

    async def _forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Remove one of the user's owner's facts; another owner's fact is treated as unknown (never removed)."""
        if (user_id := self._user(update)) is None:
            return
        wanted = " ".join(context.args or []).strip().lstrip("#")
        facts = await self.companion.store.list_facts(self.owners.for_telegram_user(user_id))
        if not wanted.isdigit() or int(wanted) not in {fact.id for fact in facts}:
            await self._say(update, context, "Which one? /facts shows their numbers, e.g. /forget 3")
            return
        await self.companion.store.remove_fact(int(wanted))
        await self._say(update, context, f"Forgotten (#{wanted}).")

    async def _facts(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (user_id := self._user(update)) is None:
            return
        facts = await self.companion.store.list_facts(self.owners.for_telegram_user(user_id))
        lines = [f"#{fact.id} {fact.text}" for fact in facts]
        await self._say(update, context, "\n".join(lines) if lines else "I don't remember anything yet.")

    async def _status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Which brain answers, and how much of today's Gemini budget is used."""
        if self._user(update) is None:
            return
        router = self.companion.router
        lines = [f"Persona: {self.companion.persona.name}", f"Brain: {router.description}"]
        if router.budget is not None:
            used = await router.budget.requests_today()
            lines.append(f"Gemini requests today: {used} of {router.budget.config.requests_per_day}")
        await self._say(update, context, "\n".join(lines))
