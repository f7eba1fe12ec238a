"""How the server may be reached: TLS or plain, open to anyone or guarded by device tokens, and when to refuse.

`[server] tls = "auto"` serves TLS once the server listens beyond this computer or a plush is paired, and plain
gRPC on 127.0.0.1 otherwise, so the one-computer setup (`scripts/companion`) needs no certificate. A server
reachable beyond this computer with no device token at all (none paired, PLUSH_DEVICE_TOKENS unset) would let
anyone on the network talk to the companion: it does not start unless `allow_open` says so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from plush.config import ServerConfig
from plush.errors import PlushError
from plush.logs import get_logger

log = get_logger(__name__)


class ExposedServerError(PlushError):
    """The server would listen beyond this computer with no device token to check."""


@dataclass(frozen=True)
class Transport:
    """The decision for one server start."""

    tls: bool
    """Serve TLS with the server's own certificate."""
    guarded: bool
    """Companion calls need a device token (from PLUSH_DEVICE_TOKENS or a pairing)."""


def is_local(host: str) -> bool:
    """Whether `host` is reachable from this computer only (a loopback address or `localhost`)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # a host name: it may resolve to a network address
        return False


def choose_transport(cfg: ServerConfig, env_tokens: Mapping[str, str], has_paired: bool) -> Transport:
    """Decide TLS and token checks for `cfg` (`has_paired`: some plush is paired), or refuse an open server on the
    network (`ExposedServerError`)."""
    local = is_local(cfg.host)
    guarded = bool(env_tokens) or has_paired
    if not local and not guarded:
        if not cfg.allow_open:
            raise ExposedServerError(
                f"refusing to listen on {cfg.host}: no plush is paired and PLUSH_DEVICE_TOKENS is unset, so anyone "
                "on the network could talk to the companion. Pair a plush first (`plush pair add NAME`), or allow "
                "it with `plush server --allow-open` ([server] allow_open = true)"
            )
        log.warning("open_server", host=cfg.host, hint="anyone on the network may talk; pair a plush instead")
    tls = cfg.tls == "on" or (cfg.tls == "auto" and (not local or has_paired))
    if guarded and not tls and not local:
        log.warning(
            "tokens_in_the_clear", host=cfg.host, hint='tls = "off": device tokens cross the network unencrypted'
        )
    return Transport(tls=tls, guarded=guarded)
