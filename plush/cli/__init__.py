"""The `plush` command line: the roof of the package, every `plush ...` command in one place.

`root.py` holds the `plush` app and its own commands (server, device, chat, config); each group has its module
(`models.py`, `memory.py`, `pair.py`, `telegram.py`, `dashboard.py`, `voice.py` and `voice_train.py`), and
`console.py` what they share. The command line wires the sides together; nothing else imports it (an
import-linter contract in pyproject.toml), so what a command prints or asks stays here.
"""

from plush.cli.root import app, main

__all__ = ["app", "main"]
