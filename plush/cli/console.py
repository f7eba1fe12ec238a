"""What every `plush` subcommand shares: the consoles it prints to and the `--config` option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# soft_wrap: long paths and messages stay on one line in pipes and logs instead of breaking at 80 columns.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $PLUSH_CONFIG, ./plush.toml, ~/.config/plush/plush.toml).",
    ),
]
