"""`plush telegram`: run the server with the Telegram bot; `allow`/`disallow` edit who may talk to it.

`plush server` starts the bot too when TELEGRAM_BOT_TOKEN is set; `plush telegram` is the same server, but it
insists on the bot (no token is an error, not a quiet server without one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from plush.cli.console import ConfigOption, out
from plush.config import find_config_file, load_config
from plush.logs import setup_logging

telegram_app = typer.Typer(
    help="Run the server with the Telegram bot (token from TELEGRAM_BOT_TOKEN), and say who may talk to it.",
    invoke_without_command=True,
)
UserId = Annotated[int, typer.Argument(help="A Telegram user id (the server logs a stranger's: telegram_stranger).")]


@telegram_app.callback()
def telegram(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Run the Plush server and its Telegram bot until Ctrl+C."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = load_config(config)
    setup_logging(cfg.log_level)
    from plush.server.app import serve_forever

    def ready(port: int) -> None:
        out.print(
            f"Plush server listening on {cfg.server.host}:{port}; the Telegram bot answers "
            f"{len(cfg.telegram.allowed_users)} allowed user(s) (Ctrl+C stops both)"
        )

    asyncio.run(serve_forever(cfg, on_ready=ready, telegram=True))


@telegram_app.command("allow")
def allow(user_id: UserId, config: ConfigOption = None) -> None:
    """Let this Telegram user talk to the companion (adds them to [telegram] allowed_users)."""
    path = _change(config, user_id, add=True)
    out.print(f"Telegram user {user_id} may talk to the companion ({path}); restart the server to apply it.")


@telegram_app.command("disallow")
def disallow(user_id: UserId, config: ConfigOption = None) -> None:
    """Stop answering this Telegram user (removes them from [telegram] allowed_users)."""
    path = _change(config, user_id, add=False)
    out.print(f"Telegram user {user_id} is no longer answered ({path}); restart the server to apply it.")


def _change(config: Path | None, user_id: int, *, add: bool) -> Path:
    from plush.cli.config_edit import edit_config  # tomlkit is the telegram extra's: a plush without it still runs

    path = find_config_file(config)

    def change(users: list[int] | None) -> list[int]:
        """The new list; a file without the key (or the table) has nobody allowed yet."""
        users = list(users or [])
        return sorted({*users, user_id}) if add else [u for u in users if u != user_id]

    return edit_config(path, "telegram", "allowed_users", change)
