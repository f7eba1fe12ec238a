"""The server this plush is paired with: its address, the plush's name and token, and the server's certificate,
pinned at `plush pair join` and kept in one 0600 file in the plush's data folder.

Joining fetches the certificate over TLS without trusting anything yet, then keeps it only if its SHA-256 is the
fingerprint in the pairing code the owner copied from the server: a machine in between cannot pass the check.
From then on the plush speaks TLS to that server with that certificate as its only root.
"""

from __future__ import annotations

import hmac
import json
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plush.config import DeviceConfig, PlushConfig, data_home
from plush.device.client import CompanionClient
from plush.pairing import (
    SERVER_NAME,
    PairingCode,
    PairingError,
    check_plush_name,
    fingerprint_of,
    split_address,
    write_private,
)

PAIRED_FILE = "paired_server.json"
DEFAULT_SERVER = DeviceConfig.model_fields["server"].default


@dataclass(frozen=True)
class PairedServer:
    """What `plush pair join` stored."""

    address: str
    """host:port from the pairing code; used while `[device] server` keeps its default."""
    name: str
    """This plush's device id on that server (its token is accepted for this name only)."""
    token: str
    certificate: str
    """The server's certificate (PEM), the only one this plush trusts for it."""
    fingerprint: str


def paired_server_path() -> Path:
    """The plush's pairing file, in its data folder."""
    return data_home() / PAIRED_FILE


def load_paired_server(path: Path | None = None) -> PairedServer | None:
    """The stored pairing, or None when this plush is not paired."""
    path = path or paired_server_path()
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        paired = PairedServer(**{key: str(data[key]) for key in PairedServer.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PairingError(f"{path} is damaged ({exc}): pair again with `plush pair join CODE`") from exc
    check_plush_name(paired.name)
    return paired


def fetch_certificate(address: str, timeout_s: float = 10.0) -> bytes:
    """The certificate (DER) the server at `address` presents, fetched without trusting it yet."""
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the caller compares the fingerprint instead: stricter than any CA
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise PairingError(
            f"the server at {address} does not speak TLS ({exc}): start it beyond localhost or with "
            '[server] tls = "on", then join again'
        ) from exc
    except OSError as exc:
        raise PairingError(
            f"cannot reach the Plush server at {address} ({exc.strerror or exc}): is `plush server` running there "
            "and listening on the network (--host 0.0.0.0)?"
        ) from exc
    if not der:
        raise PairingError(f"the server at {address} presented no certificate")
    return der


def join(code: PairingCode, *, path: Path | None = None, timeout_s: float = 10.0) -> PairedServer:
    """Fetch the server's certificate, check it against the code's fingerprint, and store the pairing (0600)."""
    der = fetch_certificate(code.address, timeout_s)
    fingerprint = fingerprint_of(der)
    if not hmac.compare_digest(fingerprint, code.fingerprint):
        raise PairingError(
            f"the server at {code.address} shows a certificate (sha256 {fingerprint[:16]}...) that is not the one in "
            f"the pairing code (sha256 {code.fingerprint[:16]}...): the code is from another server, or something "
            "stands in between. Nothing was stored; check the address, then get a fresh code with "
            f"`plush pair add {code.name} --replace` on the server"
        )
    paired = PairedServer(
        address=code.address,
        name=code.name,
        token=code.token,
        certificate=ssl.DER_cert_to_PEM_cert(der),
        fingerprint=fingerprint,
    )
    write_private(path or paired_server_path(), (json.dumps(asdict(paired), indent=2) + "\n").encode())
    return paired


def forget(path: Path | None = None) -> bool:
    """Remove the pairing; False when there was none."""
    path = path or paired_server_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def open_client(config: PlushConfig, paired: PairedServer | None = None) -> CompanionClient:
    """The client this plush talks through: TLS to its paired server, as its paired name, or (not paired) the
    configured server in plain gRPC, as before pairing existed.

    `[device] server` wins over the paired address when set to anything but its default (the server moved);
    PLUSH_DEVICE_TOKEN wins over the paired token (with `[device] id`). A paired plush always uses TLS.
    """
    device = config.device
    paired = paired or load_paired_server()
    if paired is None:
        return CompanionClient(device.server, device.id, token=config.token())
    target = paired.address if device.server == DEFAULT_SERVER else device.server
    env_token = config.token()
    return CompanionClient(
        target,
        device.id if env_token else paired.name,
        token=env_token or paired.token,
        pinned_cert=paired.certificate.encode(),
    )
