"""`plush telegram`: run the server with the Telegram bot, so owners can talk to their companion from a chat."""

from __future__ import annotations

import asyncio

import typer

from plush.config import load_config
from plush.console import ConfigOption, out
from plush.logs import setup_logging

telegram_app = typer.Typer(
    help="Run the server with the Telegram bot (token from TELEGRAM_BOT_TOKEN; who may talk: telegram.allowed_users).",
    invoke_without_command=True,
)


@telegram_app.callback()
def telegram(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Run the Plush server and its Telegram bot (long polling) until Ctrl+C."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = load_config(config)
    setup_logging(cfg.log_level)
    from plush.server.telegram.runner import serve_with_telegram

    def ready(port: int, token: str) -> None:
        out.print(
            f"Plush server listening on {cfg.server.host}:{port}, Telegram bot {token} answering "
            f"{len(cfg.telegram.allowed_users)} allowed user(s) (Ctrl+C stops both)"
        )

    asyncio.run(serve_with_telegram(cfg, on_ready=ready))
