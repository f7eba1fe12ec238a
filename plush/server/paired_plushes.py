"""The plushes paired with this server: each name with a hash of its token, in a 0600 file beside the database.

Only a SHA-256 of each token is stored (tokens are 256 random bits, so a plain hash cannot be guessed back), and
the server re-reads the file whenever it changes: `plush pair add` and `plush pair remove` take effect on a
running server at once, without a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.config import ServerConfig
from plush.logs import get_logger
from plush.pairing import PairingError, check_plush_name, same_secret, write_private

log = get_logger(__name__)
PAIRED_FILE = "paired_plushes.json"


@dataclass(frozen=True)
class PairedPlush:
    """One paired plush as listed: its name and when it was paired (never its token)."""

    name: str
    paired_at: str


class PairedPlushes:
    """Add, remove, list and check paired plushes; reads are cached until the file changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._entries: dict[str, dict[str, str]] = {}

    @classmethod
    def for_server(cls, cfg: ServerConfig) -> PairedPlushes:
        """The file of the server configured by `cfg` (beside its database)."""
        return cls(cfg.database_path().parent / PAIRED_FILE)

    def plushes(self) -> list[PairedPlush]:
        """Every paired plush, by name."""
        return [PairedPlush(name, entry.get("paired_at", "")) for name, entry in sorted(self._current().items())]

    def __bool__(self) -> bool:
        return bool(self._current())

    def add(self, name: str, *, replace: bool = False) -> str:
        """Pair `name` and return its new token (shown once: only its hash is kept)."""
        check_plush_name(name)
        entries = dict(self._current())
        if name in entries and not replace:
            raise PairingError(
                f"'{name}' is already paired: `plush pair add {name} --replace` gives it a new code "
                f"(the old one stops working), `plush pair remove {name}` unpairs it"
            )
        token = secrets.token_urlsafe(32)
        paired_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        entries[name] = {"token_sha256": _hash(token), "paired_at": paired_at}
        self._save(entries)
        return token

    def remove(self, name: str) -> None:
        """Unpair `name`: its token stops working at once, also on a running server."""
        entries = dict(self._current())
        if entries.pop(name, None) is None:
            known = ", ".join(sorted(entries)) or "none"
            raise PairingError(f"no plush named '{name}' is paired (paired: {known})")
        self._save(entries)

    def accepts(self, name: str, token: str) -> bool:
        """Whether `token` is the token of the paired plush `name`."""
        try:
            entry = self._current().get(name)
        except PairingError as exc:  # a damaged file refuses everyone until fixed; the server keeps running
            log.error("paired_plushes_unreadable", error=str(exc))
            return False
        return entry is not None and same_secret(str(entry.get("token_sha256", "")), _hash(token))

    def _current(self) -> dict[str, dict[str, str]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, {}
            return self._entries
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._entries = _parse(self.path)
            self._seen = seen
        return self._entries

    def _save(self, entries: dict[str, dict[str, str]]) -> None:
        data = {"version": 1, "plushes": entries}
        write_private(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _parse(path: Path) -> dict[str, dict[str, str]]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        plushes = data["plushes"]
        if not isinstance(plushes, dict) or not all(isinstance(v, dict) for v in plushes.values()):
            raise TypeError("'plushes' is not a table of plushes")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PairingError(f"{path} is damaged ({exc}): fix it, or delete it and pair the plushes again") from exc
    if os.name == "posix" and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return {str(name): {str(k): str(v) for k, v in entry.items()} for name, entry in plushes.items()}
