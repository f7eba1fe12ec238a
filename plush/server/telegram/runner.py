"""`plush telegram`: the Plush server with the Telegram bridge attached, until SIGINT/SIGTERM.

The bridge runs in the server's process because it must share the server's Companion: one database, one Gemini
budget, one loaded local model. (A second process on the same database would double the models in memory and
count the budget twice.) So `plush telegram` is `plush server` plus the bot.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from contextlib import suppress

from plush.config import PlushConfig
from plush.errors import PlushError
from plush.logs import get_logger
from plush.owners import Owners
from plush.server.app import start_server
from plush.server.telegram.bridge import TelegramBridge, mask_token

log = get_logger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bot_token(config: PlushConfig) -> str:
    """The bot token from TELEGRAM_BOT_TOKEN (environment or .env); a PlushError saying how to set it otherwise."""
    if config.telegram_bot_token is None or not config.telegram_bot_token.get_secret_value().strip():
        raise PlushError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and export its token")
    return config.telegram_bot_token.get_secret_value().strip()


async def serve_with_telegram(
    config: PlushConfig,
    on_ready: Callable[[int, str], None] | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the server and the bot until SIGINT/SIGTERM (or `stop` is set); `on_ready` gets the bound port and the
    masked token."""
    token = bot_token(config)
    if not config.telegram.allowed_users:
        log.warning("telegram_nobody_allowed", hint="add your Telegram user id to [telegram] allowed_users")
    running = await start_server(config)
    try:
        bridge = TelegramBridge(running.companion, Owners(config.owners), config.telegram)
        async with bridge.polling(token):
            stop = stop or asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in SIGNALS:
                with suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            if on_ready is not None:
                on_ready(running.port, mask_token(token))
            await stop.wait()
    finally:
        await running.stop()
