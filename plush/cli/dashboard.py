"""`plush dashboard`: set the dashboard's password, and say where the dashboard is.

The password is asked twice without echo (or read from standard input, for scripts) and only its argon2 hash is
written, 0600, to the file the server reads at each login: a running server takes the new password at once.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from plush.cli.console import ConfigOption, out
from plush.config import load_config
from plush.errors import PlushError

dashboard_app = typer.Typer(
    help="The web dashboard `plush server` serves: its password and address.", no_args_is_help=True
)


@dashboard_app.command("set-password")
def set_password(
    config: ConfigOption = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input (one line) instead of asking.")
    ] = False,
) -> None:
    """Set the dashboard's login password (only its argon2 hash is stored)."""
    from plush.server.dashboard.passwords import password_file
    from plush.server.dashboard.passwords import set_password as store_password

    cfg = load_config(config)
    if stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New dashboard password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise PlushError("no password given")
    path = password_file(cfg)
    store_password(path, password)
    out.print(f"dashboard password set (argon2 hash in {path}); a running server uses it from the next login")
    if cfg.dashboard_password is not None:
        out.print("note: PLUSH_DASHBOARD_PASSWORD is set in the environment and wins over this file", highlight=False)


@dashboard_app.command("url")
def url(config: ConfigOption = None) -> None:
    """Print where the dashboard of the configured server listens."""
    cfg = load_config(config).dashboard
    if not cfg.enabled:
        raise PlushError("the dashboard is off ([dashboard] enabled = false)")
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    out.print(f"http://{host}:{cfg.port}/", highlight=False)
