"""The server's own TLS certificate: made at first start, kept in the server's data folder, pinned by paired
plushes.

No certificate authority is involved: a plush learns the certificate's fingerprint from the pairing code and
trusts that one certificate only. So the certificate must never change by itself: it does not expire (RFC 5280's
"no well-defined expiration" date) and is reused on every start; deleting both files makes a new one, and every
plush must then pair again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plush.config import ServerConfig
from plush.errors import PlushError
from plush.logs import get_logger
from plush.pairing import SERVER_NAME, fingerprint_of, write_private

log = get_logger(__name__)
CERT_FILE = "server-cert.pem"
KEY_FILE = "server-key.pem"
NO_EXPIRY = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ServerCertificate:
    """The certificate (PEM) and its private key (PEM), as the server presents them."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), lowercase hex: what pairing codes carry."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return fingerprint_of(der)

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials presenting this certificate."""
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])


def certificate_paths(cfg: ServerConfig) -> tuple[Path, Path]:
    """(certificate, key) files: in the server's data folder (beside a SQLite database, by default)."""
    folder = cfg.data_folder()
    return folder / CERT_FILE, folder / KEY_FILE


def load_or_create(cfg: ServerConfig) -> ServerCertificate:
    """The server's certificate: the one on disk, or a new one (EC P-256) when there is none yet."""
    cert_path, key_path = certificate_paths(cfg)
    wanted = certificate_names(cfg.tls_names)
    if not (cert_path.is_file() and key_path.is_file()):
        cert_pem, key_pem = _create(wanted)
        write_private(key_path, key_pem)
        write_private(cert_path, cert_pem)
        log.info("certificate_created", path=str(cert_path), names=",".join(wanted))
    if key_path.stat().st_mode & 0o077:
        key_path.chmod(0o600)
        log.warning("key_permissions_fixed", path=str(key_path), mode="0600")
    certificate = ServerCertificate(cert_path.read_bytes(), key_path.read_bytes(), cert_path)
    _check(certificate, key_path, wanted)
    return certificate


def certificate_names(extra: Iterable[str] = ()) -> list[str]:
    """Names and addresses the certificate is made for: the fixed pinning name, this computer, `tls_names`."""
    names = [SERVER_NAME, "localhost", socket.gethostname(), "127.0.0.1", "::1", *extra]
    # A certificate names hosts in ASCII only (a host name in another script would need its punycode form).
    return list(dict.fromkeys(name.strip().lower() for name in names if name.strip() and name.isascii()))


def _create(names: list[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))  # a plush whose clock is a little behind still accepts it
        .not_valid_after(NO_EXPIRY)
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _check(certificate: ServerCertificate, key_path: Path, wanted: list[str]) -> None:
    """Refuse a certificate and key that do not belong together; say which wanted names it lacks."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.cert_pem)
        key = serialization.load_pem_private_key(certificate.key_pem, password=None)
    except ValueError as exc:
        raise PlushError(
            f"{certificate.cert_path} or {key_path} is not readable PEM ({exc}): delete both to make a new "
            "certificate (every plush must then pair again)"
        ) from exc
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise PlushError(
            f"{certificate.cert_path} and {key_path} do not belong together: delete both to make a new certificate "
            "(every plush must then pair again)"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:  # a certificate put there by hand may name nothing: then every name is missing
        present: set[str] = set()
    else:
        present = {str(n).lower() for n in san.get_values_for_type(x509.DNSName)}
        present |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    missing = [name for name in wanted if str(_general_name(name).value) not in present]
    if missing:
        # Paired plushes dial any address with the fixed name, so they are fine; only other clients notice.
        log.warning(
            "certificate_lacks_names",
            missing=",".join(missing),
            hint=f"delete {certificate.cert_path} and {key_path.name} to make a new one (plushes pair again)",
        )
