"""The dashboard's password: kept only as an argon2 hash (argon2-cffi), in an untracked 0600 file in the server's
data folder, or given in the environment (`PLUSH_DASHBOARD_PASSWORD`, hashed as the server starts).

The file is read again at each login, so `plush dashboard set-password` takes effect on a running server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from plush.config import PlushConfig
from plush.errors import PlushError
from plush.pairing import write_private

PASSWORD_FILE = "dashboard-password"
MIN_LENGTH = 8
_hasher = PasswordHasher()


class PasswordError(PlushError):
    """A password that cannot be set, or a password file that cannot be read."""


def password_file(config: PlushConfig) -> Path:
    """Where the hash lives: `[dashboard] password_file`, or the server's data folder (`[server] data_dir`)."""
    return config.dashboard.password_file or config.server.data_folder() / PASSWORD_FILE


def check_new_password(password: str) -> str:
    """`password` when it is good enough to protect conversations; a PasswordError saying why not otherwise."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password is too short: use at least {MIN_LENGTH} characters")
    if password.strip() != password:
        raise PasswordError("the password starts or ends with a space; remove it (it is easy to mistype)")
    return password


def set_password(path: Path, password: str) -> None:
    """Store the argon2 hash of `password` at `path` (0600, atomically); the password itself is never written."""
    write_private(path, (_hasher.hash(check_new_password(password)) + "\n").encode())


class Passwords:
    """Checks login attempts against the environment's password or the hash file."""

    def __init__(self, path: Path, env_password: str | None = None) -> None:
        self.path = path
        self._env_hash = _hasher.hash(env_password) if env_password else None

    def configured(self) -> bool:
        """Whether any password is set (else nobody can log in, and the login page says how to set one)."""
        return self._env_hash is not None or self._file_hash() is not None

    def stamp(self) -> str:
        """A short fingerprint of the current password's hash: it changes whenever the password does, so the
        sessions opened under the old one end (an unreadable file gives a stamp no session has)."""
        try:
            stored = self._env_hash or self._file_hash() or ""
        except PasswordError:
            return "unreadable"
        return hashlib.sha256(stored.encode()).hexdigest()[:16]

    def verify(self, password: str) -> bool:
        """Whether `password` is the dashboard's password (argon2 verification: constant time, deliberately slow)."""
        stored = self._env_hash or self._file_hash()
        if stored is None or not password:
            return False
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _file_hash(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PasswordError(f"cannot read the dashboard password file {self.path}: {exc.strerror}") from exc
        return text or None
