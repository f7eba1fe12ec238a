"""Change one key of the user's config file from a command (`plush telegram allow ID`), keeping their comments.

tomlkit edits the document in place, so the comments and layout the owner wrote survive. The new text is
checked with the same loader the server uses before it replaces the file (atomically), so a command never leaves
a config the server would refuse. With no config file yet, the commented defaults are written first, to the
per-user location (`~/.config/plush/plush.toml`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from plush.cli.console import out
from plush.config import default_config_text, user_config_path
from plush.errors import ConfigError


def edit_config(path: Path | None, section: str, key: str, change: Callable[[Any], Any]) -> Path:
    """Set `[section] key` to `change(current value)` in the config file at `path` (or a new per-user one);
    returns the file written."""
    from plush.config import load_config

    if path is None:
        path = user_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(default_config_text(), encoding="utf-8")
        out.print(f"created {path} (the commented defaults)")
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, TOMLKitError) as exc:
        raise ConfigError(f"{path}: cannot edit it: {exc}") from exc
    table = document.get(section)
    if table is None:
        table = tomlkit.table()
        document[section] = table
    current = table.get(key)
    table[key] = change(list(current) if isinstance(current, list) else current)
    text = tomlkit.dumps(document)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=path.parent, delete=False, encoding="utf-8") as tmp:
        tmp.write(text)
    try:
        load_config(Path(tmp.name))  # the server must still accept it
        os.replace(tmp.name, path)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return path
