"""Pairing and TLS: a paired plush talks to its server over TLS with the pinned certificate; nothing else does.

Real servers on 127.0.0.1 with TLS forced on, real certificates, the real `plush` command in subprocesses.
"""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigFactory
from cryptography import x509

from plush.config import PlushConfig, ServerConfig
from plush.device.client import AuthError, CompanionClient, UnreachableError
from plush.device.paired_server import join, load_paired_server, open_client, paired_server_path
from plush.pairing import SERVER_NAME, PairingCode, PairingError
from plush.server.app import start_server
from plush.server.certificate import certificate_paths, load_or_create
from plush.server.paired_plushes import PAIRED_FILE, paired_plushes_of
from plush.server.transport import ExposedServerError, choose_transport

PLUSH = [sys.executable, "-m", "plush"]


@dataclass
class PairedServer:
    running: Any
    config: PlushConfig
    code: PairingCode
    """The code `plush pair add nursery` would print for this server."""


@pytest.fixture
async def tls_server(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[PairedServer]:
    """A real server on 127.0.0.1 with TLS forced on and one paired plush, 'nursery'."""
    config = make_config(server={"port": 0, "database": str(tmp_path / "plush.db"), "tls": "on"})
    async with paired_plushes_of(config.server) as paired:
        token = await paired.add("nursery")
    running = await start_server(config)
    fingerprint = load_or_create(config.server).fingerprint
    try:
        yield PairedServer(running, config, PairingCode(f"127.0.0.1:{running.port}", "nursery", token, fingerprint))
    finally:
        await running.stop(grace=0)


async def reply_to(client: CompanionClient, text: str = "Hello!") -> str:
    return "".join([event.text_delta.text async for event in client.chat(text)])


async def test_a_paired_plush_talks_to_its_server_over_tls(tls_server: PairedServer) -> None:
    paired = await asyncio.to_thread(join, tls_server.code)
    assert paired.name == "nursery" and paired.fingerprint == tls_server.code.fingerprint

    async with open_client(tls_server.config) as client:  # [device] server left at its default: the paired one
        assert client.target == tls_server.code.address
        assert await reply_to(client)
    (turn,) = await tls_server.running.companion.store.list_turns()
    assert turn.device_id == "nursery"


@pytest.mark.parametrize(
    ("device", "token", "message"),
    [
        ("nursery", None, "needs a device token: .*pair it"),
        ("nursery", "not-the-token", "the token of plush 'nursery' is not accepted"),
        ("stranger", "TOKEN", "the token of plush 'stranger' is not accepted"),  # nursery's token, another name
    ],
)
async def test_an_unpaired_plush_is_refused_with_a_clear_message(
    tls_server: PairedServer, device: str, token: str | None, message: str
) -> None:
    token = tls_server.code.token if token == "TOKEN" else token
    pem = load_or_create(tls_server.config.server).cert_pem
    async with CompanionClient(tls_server.code.address, device, token=token, pinned_cert=pem) as client:
        with pytest.raises(AuthError, match=message):
            await reply_to(client)
    assert await tls_server.running.companion.store.list_turns() == [], "a refused call never reaches the brain"


async def test_a_code_with_another_fingerprint_pins_nothing(tls_server: PairedServer) -> None:
    tampered = PairingCode(
        tls_server.code.address, "nursery", tls_server.code.token, "0" * 64
    )  # what a machine in between would show: its own certificate, not the one the owner saw
    with pytest.raises(PairingError, match="not the one in the pairing code"):
        await asyncio.to_thread(join, tampered)
    assert not paired_server_path().exists()
    assert load_paired_server() is None


async def test_a_plush_pinned_to_another_certificate_refuses_the_server(
    tls_server: PairedServer, tmp_path: Path
) -> None:
    other = load_or_create(ServerConfig(database=str(tmp_path / "elsewhere" / "plush.db")))
    assert other.fingerprint != tls_server.code.fingerprint
    code = tls_server.code
    async with CompanionClient(code.address, "nursery", token=code.token, pinned_cert=other.cert_pem) as client:
        with pytest.raises(AuthError, match=r"TLS handshake .* failed: it does not show the certificate"):
            await reply_to(client)
    async with CompanionClient(code.address, "nursery", token=code.token) as plain:  # the token in the clear
        with pytest.raises(UnreachableError):
            await reply_to(plain)
    assert await tls_server.running.companion.store.list_turns() == []


async def test_the_key_is_private_and_the_certificate_is_kept(tls_server: PairedServer) -> None:
    _, key_path = certificate_paths(tls_server.config.server)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    (kept,) = await tls_server.running.companion.store.pairings("nursery")
    assert tls_server.code.token not in repr(kept), "only a hash of the token is stored"
    await asyncio.to_thread(join, tls_server.code)
    assert stat.S_IMODE(paired_server_path().stat().st_mode) == 0o600

    again = load_or_create(tls_server.config.server)
    assert again.fingerprint == tls_server.code.fingerprint, "a restart must not change what plushes pinned"
    names = x509.load_pem_x509_certificate(again.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    dns = names.value.get_values_for_type(x509.DNSName)
    assert {SERVER_NAME, "localhost"} <= set(dns)
    assert "127.0.0.1" in {str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)}


def test_configured_names_go_into_a_new_certificate(tmp_path: Path) -> None:
    cfg = ServerConfig(database=str(tmp_path / "plush.db"), tls_names=("plush.home.arpa", "192.168.1.20"))
    cert = x509.load_pem_x509_certificate(load_or_create(cfg).cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "plush.home.arpa" in names.get_values_for_type(x509.DNSName)
    assert "192.168.1.20" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def test_a_server_on_the_network_without_tokens_refuses_to_start(config_file: Path) -> None:
    result = subprocess.run(
        [*PLUSH, "server", "--config", str(config_file), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,  # it exits at once: a server that stayed listening would time out here
        check=False,
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "refusing to listen on 0.0.0.0" in line
    assert "plush pair add NAME" in line and "--allow-open" in line
    assert "listening on" not in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("server", "env_tokens", "paired", "expected"),
    [
        ({"host": "127.0.0.1"}, False, False, (False, False)),  # scripts/companion: plain and open, as before
        ({"host": "127.0.0.1"}, True, False, (False, True)),
        ({"host": "127.0.0.1"}, False, True, (True, True)),
        ({"host": "0.0.0.0"}, True, False, (True, True)),
        ({"host": "0.0.0.0", "allow_open": True}, False, False, (True, False)),
        ({"host": "0.0.0.0", "tls": "off"}, False, True, (False, True)),
        ({"host": "localhost", "tls": "on"}, False, False, (True, False)),
    ],
)
def test_auto_tls_is_on_beyond_localhost_or_once_a_plush_is_paired(
    tmp_path: Path, server: dict[str, Any], env_tokens: bool, paired: bool, expected: tuple[bool, bool]
) -> None:
    cfg = ServerConfig(**server, database=str(tmp_path / "plush.db"))
    transport = choose_transport(cfg, {"kitchen": "t0ken"} if env_tokens else {}, paired)
    assert (transport.tls, transport.guarded) == expected


def test_an_open_network_server_needs_allow_open(tmp_path: Path) -> None:
    cfg = ServerConfig(host="192.168.1.20", database=str(tmp_path / "plush.db"))
    with pytest.raises(ExposedServerError, match=r"allow_open = true"):
        choose_transport(cfg, {}, False)


@pytest.mark.parametrize(
    "code",
    [
        "plush://nursery@127.0.0.1:50051?sha256=" + "a" * 64,  # no token
        "plush://nursery:tok@127.0.0.1:50051?sha256=" + "a" * 63,  # a character lost in copying
        "plush://nursery:tok@127.0.0.1?sha256=" + "a" * 64,  # no port
        "https://nursery:tok@127.0.0.1:50051?sha256=" + "a" * 64,
        "plush://bad name:tok@127.0.0.1:50051?sha256=" + "a" * 64,
    ],
)
def test_a_damaged_pairing_code_is_refused(code: str) -> None:
    with pytest.raises(PairingError):
        PairingCode.parse(code)


def test_a_pairing_code_reads_back_as_printed() -> None:
    code = PairingCode("[fe80::1]:50051", "nursery", "tok-en_123", "ab" * 32)
    assert PairingCode.parse(f"  {code}\n") == code


async def run_plush(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """The `plush` command without blocking the event loop the in-process server answers on."""
    proc = await asyncio.create_subprocess_exec(
        *PLUSH, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pair_commands_add_join_chat_list_and_remove(tls_server: PairedServer, config_file: Path) -> None:
    config = ("--config", str(config_file))  # the same data folder as the running server
    rc, out, err = await run_plush("pair", "add", "kitchen", *config, "--address", tls_server.code.address)
    assert rc == 0, err
    (code,) = re.findall(r"plush pair join (plush://\S+)", out)
    assert PairingCode.parse(code).fingerprint == tls_server.code.fingerprint

    rc, out, err = await run_plush("pair", "join", code, *config)
    assert rc == 0, err
    assert f"talks to {tls_server.code.address} as 'kitchen' over TLS" in out

    rc, out, err = await run_plush("chat", *config, stdin="Hello!\n")  # a pairing made while the server runs
    assert rc == 0, err
    assert [line for line in out.splitlines() if line.startswith("plush> ")]

    rc, out, _ = await run_plush("pair", "list", *config)
    assert "kitchen" in out and "nursery" in out and "this plush is paired with" in out

    rc, out, err = await run_plush("pair", "remove", "kitchen", *config)
    assert rc == 0, err
    rc, out, err = await run_plush("chat", *config, stdin="Hello again!\n")
    assert rc == 1
    assert "the token of plush 'kitchen' is not accepted" in err
    devices = [turn.device_id for turn in await tls_server.running.companion.store.list_turns()]
    assert devices == ["kitchen"]


async def test_health_checks_over_tls_need_no_token(tls_server: PairedServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pem = load_or_create(tls_server.config.server).cert_pem
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    async with grpc.aio.secure_channel(tls_server.code.address, credentials, options=options) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_removing_a_plush_stops_its_turn_in_flight_and_the_turn_says_so(
    start_gemini_server: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    from plush.protos.plush.v1 import companion_pb2 as pb

    server_section: dict[str, Any] = {"port": 0, "database": str(tmp_path / "plush.db"), "tls": "off"}
    async with paired_plushes_of(ServerConfig(**server_section)) as paired:
        token = await paired.add("nursery")
    server = await start_gemini_server(server=server_section)
    fake_gemini.reply("One. ", "Two. ", "Three. ", chunk_delay=30)  # a reply that would run on for a minute
    async with CompanionClient(f"127.0.0.1:{server.port}", "nursery", token=token) as client:
        call = await client.converse(pb.TurnStart(want_audio=False), transcript="Count for me.")
        events = call.events()
        async for event in events:
            if event.WhichOneof("kind") == "text_delta":
                break
        async with paired_plushes_of(ServerConfig(**server_section)) as paired:
            await paired.remove("nursery")
        with pytest.raises(AuthError, match="pairing was removed"):
            async with asyncio.timeout(10):  # before: it ran on until the reply was done
                async for _ in events:
                    pass
    await server.companion.wait_stored()
    (turn,) = await server.companion.store.list_turns()
    assert (turn.outcome, turn.ending) == ("interrupted", "revoked")
    assert turn.reply_text.startswith("One.")


async def test_an_older_servers_paired_file_is_imported_once_and_its_plushes_still_accepted(tmp_path: Path) -> None:
    import hashlib
    import json

    # A data_dir set since: the older file is still found where it was, beside the database.
    cfg = ServerConfig(database=str(tmp_path / "plush.db"), data_dir=tmp_path / "files")
    legacy = tmp_path / PAIRED_FILE
    entry = {"token_sha256": hashlib.sha256(b"old-token").hexdigest(), "paired_at": "2026-01-01T00:00:00+00:00"}
    legacy.write_text(json.dumps({"version": 1, "plushes": {"nursery": entry, "kitchen": entry}}))
    legacy.chmod(0o600)

    async with paired_plushes_of(cfg) as paired:
        assert paired.accepts("nursery", "old-token") and not paired.accepts("nursery", "another")
        assert [p.name for p in await paired.plushes()] == ["kitchen", "nursery"]
        await paired.remove("kitchen")
    assert not legacy.exists() and (tmp_path / f"{PAIRED_FILE}.imported").exists()
    async with paired_plushes_of(cfg) as paired:
        assert [p.name for p in await paired.plushes()] == ["nursery"], "imported once: a removal sticks"
