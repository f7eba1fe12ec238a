"""What the server and the plush agree on when they pair: the one-line pairing code, how a certificate's
fingerprint is written, the name every Plush server certificate carries, and how secrets are compared and
written to disk.

The code carries the server's address, the plush's name and token, and the SHA-256 fingerprint of the server's
certificate, so the plush can check that the certificate it fetches is the one the owner saw on the server
(nobody in between) and pin it. Both sides import this module; it imports neither side.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from plush.errors import PlushError

SERVER_NAME = "plush-server"
"""A name in every Plush server certificate. A paired plush checks the certificate against it whatever address
it dials, since a home server's address changes (DHCP) while its pinned certificate does not."""
SCHEME = "plush"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")


class PairingError(PlushError):
    """Pairing cannot go on: a malformed code, a certificate that is not the one in the code, an unknown plush."""


def fingerprint_of(der: bytes) -> str:
    """The SHA-256 of a DER certificate as lowercase hex: what the code carries and the plush compares."""
    return hashlib.sha256(der).hexdigest()


def check_plush_name(name: str) -> str:
    """A plush name that fits the device id metadata (letters, digits, `.`, `_`, `-`; at most 64)."""
    if not NAME_PATTERN.fullmatch(name):
        raise PairingError(
            f"'{name}' cannot name a plush: use letters, digits, '.', '_' or '-' (at most 64, e.g. 'nursery')"
        )
    return name


def split_address(address: str) -> tuple[str, int]:
    """(host, port) from `host:port` or `[v6]:port`."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PairingError(f"'{address}' is not a server address: write it as HOST:PORT (e.g. 192.168.1.20:50051)")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(frozen=True)
class PairingCode:
    """What `plush pair add` prints on the server and `plush pair join` reads on the plush."""

    address: str
    """host:port the plush dials (IPv6 in brackets)."""
    name: str
    """The plush's device id; its token is accepted for this name only."""
    token: str
    fingerprint: str
    """SHA-256 of the server certificate (DER), lowercase hex."""

    def __str__(self) -> str:
        return f"{SCHEME}://{self.name}:{self.token}@{self.address}?sha256={self.fingerprint}"

    @classmethod
    def parse(cls, text: str) -> PairingCode:
        """Read a code as printed (surrounding spaces are forgiven); a code that is not whole is refused."""
        example = f"{SCHEME}://NAME:TOKEN@HOST:PORT?sha256=FINGERPRINT"
        parts = urlsplit(text.strip())
        userinfo, at, address = parts.netloc.rpartition("@")
        name, colon, token = userinfo.partition(":")
        fingerprints = parse_qs(parts.query).get("sha256", [])
        if parts.scheme != SCHEME or not at or not colon or not token or len(fingerprints) != 1:
            raise PairingError(f"not a pairing code (it looks like {example}): copy the whole line")
        fingerprint = fingerprints[0].lower().replace(":", "")
        if not FINGERPRINT_PATTERN.fullmatch(fingerprint):
            raise PairingError("the pairing code's fingerprint is cut or altered: copy the whole line again")
        split_address(address)
        return cls(address=address, name=check_plush_name(name), token=token, fingerprint=fingerprint)


def same_secret(expected: str, offered: str) -> bool:
    """Whether `offered` is `expected` (a token, a CSRF token, a fingerprint), in constant time.

    Compared as UTF-8 bytes: `hmac.compare_digest` on `str` raises TypeError for anything outside ASCII, which
    once turned a stray `é` in a form's token into a 500. As bytes, any text is simply right or wrong."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), offered.encode("utf-8", "surrogatepass"))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a key, a token) readable by its owner only (0600), atomically: a reader sees the old file
    or the new one, never half of it, and the secret is never on disk with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
