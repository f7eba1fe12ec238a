"""The plushes paired with this server: each name with a hash of its token, kept in the store.

Only a SHA-256 of each token is stored (tokens are 256 random bits, so a plain hash cannot be guessed back). The
store holds them, not a file beside the database, so every replica on one database accepts a plush paired once
(`plush pair add` on any machine) without a restart. The token check runs on every call and must not wait for
the database, so each server keeps a copy in memory: a call whose token the copy does not accept looks its
plush up in the store first (a pairing made a moment ago is accepted at once), and the copy is read again every
`REFRESH_S` (a removed plush is refused, and its turn in flight stopped, within about that long).

A server from before kept them in `paired_plushes.json` beside its database (`paired_file`): the file is imported
once, at the first start (or `plush pair` command) that finds it, and renamed `paired_plushes.json.imported`, so
no pairing is lost and none removed since comes back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.config import ServerConfig
from plush.logs import get_logger
from plush.pairing import PairingError, check_plush_name, same_secret
from plush.server.store import Pairing, Store

log = get_logger(__name__)
PAIRED_FILE = "paired_plushes.json"
IMPORTED_SUFFIX = ".imported"
REFRESH_S = 0.5
"""How often a running server reads the paired plushes again (`PairedPlushes.refresh`)."""


@dataclass(frozen=True)
class PairedPlush:
    """One paired plush as listed: its name and when it was paired (never its token)."""

    name: str
    paired_at: str


class PairedPlushes:
    """Add, remove, list and check paired plushes in `store`; `accepts` answers from the copy in memory."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._hashes: dict[str, str] = {}

    @classmethod
    async def open(cls, store: Store, older_file: Path) -> PairedPlushes:
        """The paired plushes in `store`, with an older server's file (`older_file`, see `paired_file`) imported
        first."""
        paired = cls(store)
        await paired.import_file(older_file)
        await paired.refresh()
        return paired

    async def refresh(self) -> None:
        """Read every pairing from the store again."""
        self._hashes = {p.name: p.token_sha256 for p in await self._store.pairings()}

    def __bool__(self) -> bool:
        """Whether any plush was paired (as of the last `refresh`)."""
        return bool(self._hashes)

    async def plushes(self) -> list[PairedPlush]:
        """Every paired plush, by name."""
        return [PairedPlush(p.name, p.paired_at) for p in await self._store.pairings()]

    async def add(self, name: str, *, replace: bool = False) -> str:
        """Pair `name` and return its new token (shown once: only its hash is kept)."""
        check_plush_name(name)
        token = secrets.token_urlsafe(32)
        paired_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if not await self._store.add_pairing(Pairing(name, _hash(token), paired_at), replace=replace):
            raise PairingError(
                f"'{name}' is already paired: `plush pair add {name} --replace` gives it a new code "
                f"(the old one stops working), `plush pair remove {name}` unpairs it"
            )
        self._hashes[name] = _hash(token)
        return token

    async def remove(self, name: str) -> None:
        """Unpair `name`: its token stops working on every server within `REFRESH_S`."""
        if not await self._store.remove_pairing(name):
            known = ", ".join(p.name for p in await self._store.pairings()) or "none"
            raise PairingError(f"no plush named '{name}' is paired (paired: {known})")
        self._hashes.pop(name, None)

    def accepts(self, name: str, token: str) -> bool:
        """Whether `token` is the token of the paired plush `name`, as the copy in memory says."""
        expected = self._hashes.get(name)
        return expected is not None and same_secret(expected, _hash(token))

    async def look_up(self, name: str) -> None:
        """Read `name`'s pairing from the store into the copy (a plush paired on another machine just now)."""
        found = await self._store.pairings(name)
        if found:
            self._hashes[name] = found[0].token_sha256
        else:
            self._hashes.pop(name, None)

    async def import_file(self, path: Path) -> int:
        """Import an older server's pairings from `path` (a pairing already in the store wins), then rename the
        file so it is imported once; the number imported. A damaged file is left in place and said so."""
        try:
            entries = _parse(path)
        except FileNotFoundError:
            return 0
        except PairingError as exc:
            log.error("paired_plushes_not_imported", error=str(exc))
            return 0
        imported = 0
        for name, entry in entries.items():
            pairing = Pairing(name, entry.get("token_sha256", ""), entry.get("paired_at", ""))
            if pairing.token_sha256 and await self._store.add_pairing(pairing):
                imported += 1
        with suppress(FileNotFoundError):  # another replica imported the same file at the same moment
            path.rename(path.with_name(path.name + IMPORTED_SUFFIX))  # noqa: ASYNC240 - once, at start
        log.info("paired_plushes_imported", path=str(path), plushes=imported)
        return imported


@asynccontextmanager
async def paired_plushes_of(cfg: ServerConfig) -> AsyncIterator[PairedPlushes]:
    """The paired plushes of the server `cfg` configures, on a store opened for them (`plush pair`, tests)."""
    async with await Store.open(cfg.database_location()) as store:
        yield await PairedPlushes.open(store, paired_file(cfg))


def paired_file(cfg: ServerConfig) -> Path:
    """Where a server from before kept its paired plushes: beside its SQLite file (whatever `data_dir` says now);
    with PostgreSQL, in the data folder, where an owner moving a home's pairings over would put it."""
    folder = cfg.data_folder() if cfg.database_url() else cfg.database_path().parent
    return folder / PAIRED_FILE


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _parse(path: Path) -> dict[str, dict[str, str]]:
    """The plushes of a `paired_plushes.json` (version 1); FileNotFoundError when there is none."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        plushes = data["plushes"]
        if not isinstance(plushes, dict) or not all(isinstance(v, dict) for v in plushes.values()):
            raise TypeError("'plushes' is not a table of plushes")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PairingError(f"{path} is damaged ({exc}): fix it, or delete it and pair the plushes again") from exc
    if os.name == "posix" and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return {str(name): {str(k): str(v) for k, v in entry.items()} for name, entry in plushes.items()}
