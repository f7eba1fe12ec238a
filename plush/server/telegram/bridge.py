"""The bot: allowed users' messages and voice notes become companion turns (source `telegram`), and the replies
go back as they stream, as text, a voice note in the companion's voice, or both.

Private by default: only the user ids in `[telegram] allowed_users` get an answer, and in group chats only when
`allow_groups` is on. Anyone else gets nothing (no reply, no typing indicator, no LLM call), and their id is
logged once so an owner can add themselves (`plush telegram allow ID`).

Updates are handled concurrently across chats and in order within a chat (turns.ChatLine). Each is kept on
disk from its arrival until it is handled (inbox.py), so a server killed mid-reply answers it after the restart,
once. Every message from an allowed user is stored as a turn, whatever became of it: answered, refused (a voice
note it will not hear, the rate limit), no speech, or an error (Telegram refused the reply at every try).
Starting without network is not fatal: the bot keeps trying with backoff (said once in the log) while the server
serves plushes. Replicas that share a Redis run the bot each, and only one polls at a time (replicas.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from plush.config import HouseholdConfig, ServerConfig, TelegramConfig, data_home
from plush.errors import PlushError
from plush.logs import get_logger
from plush.server.companion import Companion, Stopwatch, TurnRequestData
from plush.server.contract_limits import MAX_INPUT_CHARS
from plush.server.in_flight import AdmissionError, Slot, TurnsInFlight
from plush.server.store.records import REPLICA_LOST
from plush.server.telegram.chat_settings import ChatSettings, answers_with
from plush.server.telegram.commands import COMMANDS, Commands, Presence
from plush.server.telegram.delivery import best_effort, deliver
from plush.server.telegram.identity import ChatIdentity, Identities
from plush.server.telegram.inbox import Inbox, InboxApplication, InboxQueue, turn_id
from plush.server.telegram.listening import Listener, VoiceNoteError
from plush.server.telegram.replicas import TelegramReplicas, bot_id
from plush.server.telegram.turns import ChatLine, FloodGuard, answer
from plush.voice_models.stt import Transcriber

if TYPE_CHECKING:
    from plush.server.shared_state import SharedState

log = get_logger(__name__)
CONCURRENT_UPDATES = 32
MAX_REMEMBERED = 10_000
"""Strangers and refused groups remembered (each is logged once); past that the memory starts afresh."""
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0
SLOW_DOWN = "That's a lot of messages at once! Let me catch my breath; try again in a minute."
BUSY = "I'm talking with a lot of friends right now! Send that again in a moment, please."
App = Application[Any, Any, Any, Any, Any, Any]
MESSAGES = filters.UpdateType.MESSAGE
"""New messages only: an edited message is not a new turn."""


def mask_token(token: str) -> str:
    """The bot token as it may appear in logs and messages: only its last four characters."""
    return "****" + token[-4:]


def file_url(api_url: str) -> str:
    """The Bot API's file download base for `api_url` (`.../bot` -> `.../file/bot`, as Telegram serves them)."""
    return api_url[: -len("bot")] + "file/bot" if api_url.endswith("/bot") else api_url.rstrip("/") + "/file/bot"


class TelegramBridge:
    """Connects Telegram (long polling or a webhook) to a `Companion`: the same one the plush talks to."""

    def __init__(
        self,
        companion: Companion,
        settings: TelegramConfig,
        households: dict[str, HouseholdConfig] | None = None,
        *,
        transcriber: Transcriber | None = None,
        presence: Presence | None = None,
        state_dir: Path | None = None,
        in_flight: TurnsInFlight | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.companion = companion
        self.shared = shared
        """The replicas' Redis (`[server] redis`): one poller among them, each pushed update handled once."""
        self.replicas: TelegramReplicas | None = None
        if in_flight is None:  # a bridge of its own (tools, tests): the server's defaults
            defaults = ServerConfig()
            in_flight = TurnsInFlight(defaults.max_turns_in_flight, defaults.max_stt_in_flight)
        self.in_flight = in_flight
        """The server's admission (the same as a plush's turns pass): its limits and gauge count these turns."""
        self.settings = settings
        self.allowed = frozenset(settings.allowed_users)
        self.identities = Identities(settings, households or {})
        state = (state_dir or data_home()) / "telegram"
        self.chats = ChatSettings(state / "chats.json", settings.replies)
        # Replicas behind a webhook each keep an inbox of their own (named by the port they listen on, the same
        # after a restart): one starting must not answer what another replica on this machine is answering now.
        shared_hook = shared is not None and bool(settings.webhook_url)
        self.inbox = Inbox(state / (f"inbox-{settings.webhook_port}" if shared_hook else "inbox"))
        self.commands = Commands(companion, self.chats, presence)
        self.listener = Listener(transcriber, max_seconds=settings.max_voice_seconds, keep=settings.keep_voice_notes)
        self.line = ChatLine()
        self.flood = FloodGuard(settings.rate_limit)
        self._strangers: set[int] = set()
        self._groups_refused: set[int] = set()
        self._token = ""

    def application(self, token: str) -> App:
        """The python-telegram-bot application with Plush's handlers (not started)."""
        self._token = token
        if self.shared is not None:
            self.replicas = TelegramReplicas(self.shared, bot_id(token))
            self.chats.share(self.shared, self.shared.key("telegram", bot_id(token), "chats"))
            self.flood = FloodGuard(self.settings.rate_limit, self.shared)
        claim = self.replicas.claim if self.replicas is not None and self.settings.webhook_url else None
        app: App = (
            Application.builder()
            .application_class(InboxApplication)
            .update_queue(InboxQueue(self.inbox, claim))
            .token(token)
            .base_url(self.settings.api_url)
            .base_file_url(file_url(self.settings.api_url))
            .concurrent_updates(CONCURRENT_UPDATES)
            .build()
        )
        for name, _ in COMMANDS:
            app.add_handler(CommandHandler(name, partial(self._command, name), filters=MESSAGES))
        app.add_handler(MessageHandler(MESSAGES & filters.TEXT & ~filters.COMMAND, self._text))
        app.add_handler(
            MessageHandler(MESSAGES & (filters.VOICE | filters.AUDIO | filters.Document.AUDIO), self._voice)
        )
        app.add_handler(MessageHandler(MESSAGES & ~filters.COMMAND, self._other))
        app.add_error_handler(self._failed)
        return app

    async def serve(self, token: str, stop: asyncio.Event, *, started: asyncio.Event | None = None) -> None:
        """Run the bot until `stop` is set: connect (retrying with backoff while Telegram is unreachable), set the
        command list, then poll or take the webhook. Among replicas, only the poller lease's holder polls."""
        app = self.application(token)
        if not await self._connect(app, stop):
            return
        try:
            await deliver(
                lambda: app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS]), what="setMyCommands"
            )
            await app.start()
            if self.replicas is not None and not self.settings.webhook_url:
                self._started(app, started)  # the bot is up; it polls when the lease comes to this replica
                await self.replicas.poll_while_held(app, stop, partial(self._replay_and_receive, app))
            else:
                await self._replay_and_receive(app)
                self._started(app, started)
            await stop.wait()
        finally:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()  # confirms the updates handled so far: a restart won't answer them again
            if app.running:
                await app.stop()  # answers what was already received
            await app.shutdown()

    @asynccontextmanager
    async def polling(self, token: str, *, poll_timeout: int = 10) -> AsyncIterator[None]:
        """The bot running for the duration of the block (started before the block begins), for tests and tools."""
        stop, started = asyncio.Event(), asyncio.Event()
        self._poll_timeout = poll_timeout
        task = asyncio.create_task(self.serve(token, stop, started=started), name="telegram-bot")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # raises why it could not start
        try:
            yield
        finally:
            stop.set()
            await task

    def _started(self, app: App, started: asyncio.Event | None) -> None:
        log.info(
            "telegram_started",
            bot=app.bot.username,
            token=mask_token(self._token),
            allowed=len(self.allowed),
            poller_lease=self.replicas is not None and not self.settings.webhook_url,
        )
        if started is not None:
            started.set()

    async def _replay_and_receive(self, app: App) -> None:
        await self._replay(app)
        await self._receive(app)

    async def _connect(self, app: App, stop: asyncio.Event) -> bool:
        """Initialize (getMe) until it works or `stop` is set; a refused token is a PlushError at once."""
        delay, said = RETRY_FIRST_S, False
        while not stop.is_set():
            try:
                await app.initialize()
                if said:
                    log.info("telegram_reachable_again")
                return True
            except InvalidToken as exc:
                raise PlushError(
                    f"Telegram refused the bot token {mask_token(self._token)}: check TELEGRAM_BOT_TOKEN"
                ) from exc
            except NetworkError as exc:
                if not said:
                    log.warning("telegram_unreachable", error=self._masked(exc), hint="retrying in the background")
                    said = True
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return False

    async def _replay(self, app: App) -> None:
        """Handle again what the last run received and never finished (it was killed mid-reply)."""
        left = self.inbox.left()
        if left:
            log.warning("telegram_replaying", updates=len(left), hint="the last run stopped before answering them")
        for payload in left:
            update = Update.de_json(payload, app.bot)
            if update is not None:
                assert isinstance(app.update_queue, InboxQueue)
                await app.update_queue.replay(update)

    async def _receive(self, app: App) -> None:
        assert app.updater is not None
        if not self.settings.webhook_url:
            await app.updater.start_polling(timeout=getattr(self, "_poll_timeout", 10), bootstrap_retries=-1)
            return
        url = urlparse(self.settings.webhook_url)
        secret = secrets.token_urlsafe(32)  # Telegram echoes it: a stranger's POST is refused
        if self.replicas is not None:
            secret = await self.replicas.webhook_secret(secret)  # one for every replica: Telegram keeps the last
        await app.updater.start_webhook(
            listen=self.settings.webhook_listen,
            port=self.settings.webhook_port,
            url_path=url.path.lstrip("/"),
            webhook_url=self.settings.webhook_url,
            secret_token=secret,
            bootstrap_retries=-1,
        )

    def _masked(self, error: BaseException) -> str:
        text = repr(error)
        return text.replace(self._token, mask_token(self._token)) if self._token else text

    async def _failed(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An update whose handling failed (Telegram unreachable past the retries): logged once, bot keeps going."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("telegram_update_failed", update_id=update_id, error=self._masked(context.error or Exception()))

    def _who(self, update: Update) -> ChatIdentity | None:
        """The sender's identity when they may use the bot here; None (after logging a stranger once) otherwise."""
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None or user.is_bot:
            return None
        if user.id not in self.allowed:
            if user.id not in self._strangers:
                if len(self._strangers) >= MAX_REMEMBERED:  # a crowd of strangers cannot grow memory for ever
                    self._strangers.clear()
                self._strangers.add(user.id)
                log.warning("telegram_stranger", user_id=user.id, hint=f"to allow them: plush telegram allow {user.id}")
            return None
        if chat.type == "private":
            return self.identities.private(user.id)
        if chat.type in ("group", "supergroup") and self.settings.allow_groups:
            return self.identities.group(user.id, chat.id)
        if chat.id not in self._groups_refused:
            if len(self._groups_refused) >= MAX_REMEMBERED:
                self._groups_refused.clear()
            self._groups_refused.add(chat.id)
            log.warning("telegram_group_ignored", chat_id=chat.id, hint="set [telegram] allow_groups = true")
        return None

    async def _admitted(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
        """Within the sender's rate limit, checked as the message arrives; the first one over it gets a single
        "slow down" (sent in the background, so the check itself never waits on Telegram)."""
        assert update.effective_user is not None and update.effective_chat is not None
        verdict = await self.flood.admit(update.effective_user.id)
        if verdict is True:
            return True
        log.warning("telegram_rate_limited", user_id=update.effective_user.id)
        if verdict is False:
            chat_id = update.effective_chat.id
            context.application.create_task(
                best_effort(lambda: context.bot.send_message(chat_id, SLOW_DOWN), what="sendMessage")
            )
        return False

    async def _handled(self, turn: TurnRequestData, admitted: bool) -> bool:
        """True when this message needs no answer: its turn's end is stored already (handled by a run that died
        before it let go of the update), or it is over the rate limit (stored `refused` here). A turn stored only as
        under way (`replica_lost`: its run died mid-reply) is answered again, and that answer replaces it."""
        if (stored := await self.companion.store.get_turn(turn.turn_id)) is not None and stored.ending != REPLICA_LOST:
            log.info("telegram_already_answered", turn_id=turn.turn_id)
            return True
        if not admitted:
            limit = f"over the sender's rate limit ([telegram] rate_limit = {self.settings.rate_limit!r})"
            await self.companion.store_unanswered(turn, "refused", limit)
        return not admitted

    async def _admit(self, turn: TurnRequestData, bot: Any, chat_id: int, *, stt: bool = False) -> Slot | None:
        """A place among the server's turns in flight (and in its speech recognition, for a voice note), as a
        plush's turn takes one; None (stored `refused`, the sender told) when the server is full."""
        try:
            slot = self.in_flight.admit(turn.turn_id, turn.device_id, one_per_device=False)
        except AdmissionError as exc:
            await self._busy(turn, bot, chat_id, str(exc))
            return None
        slot.on_stop = lambda reason: setattr(turn, "stopped_because", reason.name.lower())
        if stt:
            try:
                self.in_flight.take_stt(slot)
            except AdmissionError as exc:
                self.in_flight.release(slot)
                await self._busy(turn, bot, chat_id, str(exc))
                return None
        return slot

    async def _busy(self, turn: TurnRequestData, bot: Any, chat_id: int, why: str) -> None:
        """The server is full: the turn is stored `refused` with why, and the sender asked to try again."""
        log.warning("telegram_turn_refused", turn_id=turn.turn_id, chat_id=chat_id, reason=why)
        await self.companion.store_unanswered(turn, "refused", why)
        await best_effort(lambda: bot.send_message(chat_id, BUSY), what="sendMessage")

    async def _command(self, name: str, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (who := self._who(update)) is None or update.effective_chat is None:
            return
        chat_id = update.effective_chat.id

        async def say(text: str) -> None:
            await deliver(lambda: context.bot.send_message(chat_id, text), what="sendMessage")

        async with self.line.turn(chat_id):
            await self.chats.refresh()  # a choice made through another replica
            await self.commands.run(name, list(context.args or []), who, chat_id, say)

    async def _text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message: one companion turn."""
        if (who := self._who(update)) is None or update.message is None or update.effective_chat is None:
            return
        if not (text := (update.message.text or "").strip()):
            return
        chat_id = update.effective_chat.id
        turn = self._turn(who, context, update.message.message_id, chat_id, text[:MAX_INPUT_CHARS])
        admitted = await self._admitted(update, context)
        async with self.line.turn(chat_id):
            await self.chats.refresh()  # a choice made through another replica
            if await self._handled(turn, admitted) or (slot := await self._admit(turn, context.bot, chat_id)) is None:
                return
            text_out, voice_out = answers_with(self.chats.mode(chat_id), voice_in=False)
            try:
                await answer(self.companion, context.bot, chat_id, turn, text_out=text_out, voice_out=voice_out)
            finally:
                self.in_flight.release(slot)

    async def _voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A voice note (or audio file): heard with Whisper, then one companion turn."""
        message = update.message
        if (who := self._who(update)) is None or message is None or update.effective_chat is None:
            return
        assert update.effective_user is not None
        chat_id = update.effective_chat.id
        turn = self._turn(who, context, message.message_id, chat_id, "")
        admitted = await self._admitted(update, context)
        media = message.voice or message.audio or message.document
        async with self.line.turn(chat_id):
            await self.chats.refresh()  # a choice made through another replica
            if await self._handled(turn, admitted):
                return
            if (slot := await self._admit(turn, context.bot, chat_id, stt=True)) is None:
                return
            try:
                await self._hear_and_answer(update, context, turn, media, slot)
            finally:
                self.in_flight.release(slot)

    async def _hear_and_answer(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, turn: TurnRequestData, media: Any, slot: Slot
    ) -> None:
        """The voice note heard (stored as refused, an error or no speech when it cannot be), then answered."""
        message, chat = update.message, update.effective_chat
        assert message is not None and update.effective_user is not None and chat is not None
        chat_id = chat.id
        clock = Stopwatch()
        try:
            heard = await self.listener.hear(context.bot, update.effective_user.id, message.message_id, media)
        except VoiceNoteError as exc:
            reason = str(exc)
            log.info("telegram_voice_refused", chat_id=chat_id, reason=reason)
            await self.companion.store_unanswered(turn, "refused", reason)
            await best_effort(lambda: message.reply_text(reason), what="sendMessage")
            return
        except TelegramError as exc:  # getFile or the download failed at every try
            problem = f"could not fetch the voice note from Telegram: {self._masked(exc)}"
            log.error("telegram_voice_unfetched", chat_id=chat_id, error=problem)
            await self.companion.store_unanswered(turn, "error", problem)
            await best_effort(
                lambda: message.reply_text("I couldn't get that voice note from Telegram. Send it again?"),
                what="sendMessage",
            )
            return
        finally:
            self.in_flight.release_stt(slot)  # heard: another note may use the server's Whisper
        if not heard.text:
            await self.companion.store_unanswered(turn, "no_speech", "no words were heard in the voice note")
            await best_effort(
                lambda: message.reply_text("I couldn't hear any words in that. Try again?"), what="sendMessage"
            )
            return
        text_out, voice_out = answers_with(self.chats.mode(chat_id), voice_in=True)
        turn.user_text, turn.language = heard.text[:MAX_INPUT_CHARS], heard.language
        heard_at = clock.now_ms()
        clock.record("voice_note", 0.0, heard_at - heard.stt_ms)  # fetched and decoded
        clock.record("stt", heard_at - heard.stt_ms, heard_at)
        turn.clock = clock
        log.info("telegram_voice_heard", chat_id=chat_id, seconds=round(heard.seconds, 1), language=heard.language)
        await answer(self.companion, context.bot, chat_id, turn, text_out=text_out, voice_out=voice_out)

    async def _other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A sticker, photo...: said what the bot understands, instead of silence."""
        if self._who(update) is None or update.message is None:
            return
        message = update.message
        await best_effort(lambda: message.reply_text("I can read text and listen to voice notes."), what="sendMessage")

    def _turn(
        self, who: ChatIdentity, context: ContextTypes.DEFAULT_TYPE, message_id: int, chat_id: int, text: str
    ) -> TurnRequestData:
        return TurnRequestData(
            turn_id=turn_id(context.bot.id, chat_id, message_id),
            conversation_id=who.conversation_id,
            device_id=who.device_id,
            source="telegram",
            user_text=text,
            want_audio=False,
            owner=who.owner,
        )
