"""The Telegram bot inside the server process: started by `plush server` when TELEGRAM_BOT_TOKEN is set (and
`[telegram] enabled`), and by `plush telegram`, which insists on it.

The bot runs in the server's process because it must share the server's Companion: one database, one Gemini
budget, one loaded local model, one Whisper. (A second process on the same database would double the models in
memory and count the budget twice.) Replicas that share a Redis each run the bot, and the poller's lease lets one
poll at a time. A bot that cannot reach Telegram keeps retrying in the background; the plushes are served
meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from plush.config import PlushConfig
from plush.errors import PlushError
from plush.logs import get_logger

if TYPE_CHECKING:
    from plush.server.dashboard.presence import Presence
    from plush.server.telegram.bridge import TelegramBridge

log = get_logger(__name__)
STOP_WAIT_S = 15.0
"""How long a stopping bot may take to finish the replies it is writing."""


def bot_token(config: PlushConfig) -> str:
    """The bot token from TELEGRAM_BOT_TOKEN (environment or .env); a PlushError saying how to set it otherwise."""
    if config.telegram_bot_token is None or not config.telegram_bot_token.get_secret_value().strip():
        raise PlushError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and export its token")
    return config.telegram_bot_token.get_secret_value().strip()


def wanted(config: PlushConfig, required: bool) -> bool:
    """Whether this server runs the bot: always for `plush telegram`, else when a token is set and it is enabled."""
    if required:
        return True
    token = config.telegram_bot_token
    return config.telegram.enabled and token is not None and bool(token.get_secret_value().strip())


def plush_presence(presence: Presence | None, window_s: float) -> Callable[[str], str | None] | None:
    """A plush's device id -> "online" / "offline, last seen 12 min ago" / "not seen since the server started"."""
    if presence is None:
        return None

    def describe(device_id: str) -> str:
        seen = presence.get(device_id)
        if seen is None:
            return "not seen since the server started"
        if seen.online(window_s):
            return "online"
        minutes = max(1, round((time.time() - seen.last_seen) / 60))
        return f"offline, last seen {minutes} min ago"

    return describe


@asynccontextmanager
async def telegram_bot(
    config: PlushConfig, running: object, stop: asyncio.Event, *, required: bool = False
) -> AsyncIterator[TelegramBridge | None]:
    """The bot running beside `running` (a RunningServer) for the duration of the block, or None when it is not
    wanted. If the bot fails for good (a refused token), `stop` is set when it is `required`, else it is logged
    and the server goes on without it."""
    if not wanted(config, required):
        yield None
        return
    token = bot_token(config)
    try:
        from plush.server.telegram.bridge import TelegramBridge, mask_token
    except ImportError as exc:
        raise PlushError(f"the Telegram bot needs its extra: pip install 'plush[telegram]' ({exc})") from exc
    if not config.telegram.allowed_users:
        log.warning("telegram_nobody_allowed", hint="plush telegram allow YOUR_ID (the log shows it when you write)")
    bridge = TelegramBridge(
        running.companion,  # type: ignore[attr-defined]
        config.telegram,
        dict(config.owners),
        transcriber=getattr(running, "transcriber", None),
        presence=plush_presence(getattr(running, "presence", None), config.dashboard.online_window_s),
        in_flight=getattr(running, "in_flight", None),
        shared=getattr(running, "shared", None),
    )
    bot_stop = asyncio.Event()
    task = asyncio.create_task(bridge.serve(token, bot_stop), name="telegram-bot")
    failure: list[BaseException] = []

    def ended(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            failure.append(exc)
            log.error("telegram_stopped", error=str(exc), token=mask_token(token))
            if required:
                stop.set()

    task.add_done_callback(ended)
    try:
        yield bridge
    finally:
        bot_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
        except TimeoutError:
            task.cancel()
        except BaseException:
            pass
    if failure and required:
        raise failure[0]
