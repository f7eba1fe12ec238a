"""`plush pair`: give a plush its token and the server's certificate, so it talks to the server over TLS.

On the server, `plush pair add NAME` makes a token for the plush (only its hash is kept) and prints a one-line
pairing code: the server's address, the plush's name and token, and the certificate's SHA-256 fingerprint. On
the plush, `plush pair join CODE` fetches the certificate, checks the fingerprint and pins it. Server-side
modules are imported inside the commands, so a plush without the server extras can still join.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from plush.cli.console import ConfigOption, out
from plush.config import PlushConfig, ServerConfig, load_config
from plush.errors import PlushError
from plush.logs import setup_logging
from plush.pairing import PairingCode, check_plush_name, split_address

pair_app = typer.Typer(
    help="Pair a plush with this server (add, list, remove), or this plush with a server (join, leave).",
    no_args_is_help=True,
)
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
UNROUTED_PROBE = ("192.0.2.1", 9)  # TEST-NET-1: connecting a UDP socket sends nothing, it only picks a route


def _config(path: Path | None) -> PlushConfig:
    cfg = load_config(path)
    setup_logging(cfg.log_level)
    return cfg


@pair_app.command("add")
def pair_add(
    name: Annotated[str, typer.Argument(help="The plush's name (its device id), e.g. nursery.")],
    config: ConfigOption = None,
    address: Annotated[
        str | None,
        typer.Option(help="host:port the plush dials (default: this server's network address and port)."),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Give an already paired plush a new code (the old one stops).")] = False,
) -> None:
    """On the server: pair a plush and print the code to give it (`plush pair join CODE` on the plush)."""
    from plush.server.certificate import load_or_create
    from plush.server.paired_plushes import paired_plushes_of
    from plush.server.transport import is_local

    cfg = _config(config)
    check_plush_name(name)
    dial = address or reachable_address(cfg.server)
    split_address(dial)
    certificate = load_or_create(cfg.server)

    async def pair() -> tuple[bool, str]:
        async with paired_plushes_of(cfg.server) as paired:
            return not paired, await paired.add(name, replace=replace)

    first, token = asyncio.run(pair())
    code = PairingCode(address=dial, name=name, token=token, fingerprint=certificate.fingerprint)
    out.print(f"paired '{escape(name)}'. On the plush, run:", highlight=False)
    out.print(f"  plush pair join {code}", markup=False, highlight=False)
    out.print("The code holds the plush's token and is shown only this once: keep it to yourself.", highlight=False)
    if is_local(cfg.server.host):
        out.print(
            f"note: the server listens on {escape(cfg.server.host)} only; start it with --host 0.0.0.0 so the "
            "plush can reach it",
            highlight=False,
        )
    if cfg.server.tls == "off":
        out.print(
            'note: [server] tls = "off": the plush can join and talk only once TLS is on, or through a TLS balancer '
            "at --address that presents this server's certificate (docs/deploy/cluster.md)",
            highlight=False,
        )
    if first:
        out.print(
            "If `plush server` is already running, restart it: it checks tokens and serves TLS once a plush is "
            "paired (later pairings and removals take effect at once).",
            highlight=False,
        )


@pair_app.command("list")
def pair_list(config: ConfigOption = None) -> None:
    """List the plushes paired with this server, and the server this plush is paired with."""
    from plush.device.paired_server import load_paired_server

    cfg = _config(config)
    plushes = _server_plushes(cfg)
    if plushes:
        out.print("plushes paired with this server:", highlight=False)
        for name, paired_at in plushes:
            out.print(f"  {escape(name)}  (paired {paired_at or 'at an unknown time'})", highlight=False)
    paired = load_paired_server()
    if paired is not None:
        out.print(
            f"this plush is paired with {escape(paired.address)} as '{escape(paired.name)}' "
            f"(certificate sha256 {paired.fingerprint})",
            highlight=False,
        )
    if not plushes and paired is None:
        out.print("nothing is paired: `plush pair add NAME` on the server, then `plush pair join CODE` on the plush")


@pair_app.command("remove")
def pair_remove(
    name: Annotated[str, typer.Argument(help="The paired plush's name.")], config: ConfigOption = None
) -> None:
    """On the server: unpair a plush; its token stops working at once."""
    from plush.server.paired_plushes import paired_plushes_of

    async def unpair(cfg: ServerConfig) -> None:
        async with paired_plushes_of(cfg) as paired:
            await paired.remove(name)

    asyncio.run(unpair(_config(config).server))
    out.print(f"removed '{escape(name)}': its token no longer works", highlight=False)


@pair_app.command("join")
def pair_join(
    code: Annotated[str, typer.Argument(help="The line `plush pair add NAME` printed on the server.")],
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 10.0,
) -> None:
    """On the plush: store its token and pin the server's certificate after checking its fingerprint."""
    from plush.device.paired_server import DEFAULT_SERVER, join

    cfg = _config(config)
    paired = join(PairingCode.parse(code), timeout_s=timeout)
    out.print(
        f"paired: this plush talks to {escape(paired.address)} as '{escape(paired.name)}' over TLS "
        f"(certificate sha256 {paired.fingerprint})",
        highlight=False,
    )
    if cfg.device.server not in (DEFAULT_SERVER, paired.address):
        out.print(
            f"note: [device] server = {escape(cfg.device.server)} in your configuration wins over the paired address",
            highlight=False,
        )


@pair_app.command("leave")
def pair_leave() -> None:
    """On the plush: forget its pairing (token and pinned certificate)."""
    from plush.device.paired_server import forget

    if not forget():
        raise PlushError("this plush is not paired")
    out.print("this plush is no longer paired")


def _server_plushes(cfg: PlushConfig) -> list[tuple[str, str]]:
    """(name, paired at) of the plushes paired with the server configured here (none on a plush: no server
    database, or none of the server's packages; a missing SQLite file is not made for the question)."""
    try:
        from plush.server.paired_plushes import paired_file, paired_plushes_of
    except ImportError:  # a plush: it has no server side
        return []
    server = cfg.server
    unpaired = not server.database_url() and not server.database_path().exists()
    if unpaired and not paired_file(server).exists():
        return []

    async def listed() -> list[tuple[str, str]]:
        async with paired_plushes_of(server) as paired:
            return [(p.name, p.paired_at) for p in await paired.plushes()]

    return asyncio.run(listed())


def reachable_address(cfg: ServerConfig) -> str:
    """host:port a plush on the network can dial: the configured host, or this computer's network address when
    the server listens on all of them."""
    if cfg.port == 0:
        raise PlushError("server.port is 0 (any free port): give the address with --address HOST:PORT")
    host = cfg.host
    if host in WILDCARD_HOSTS:
        host = _network_address() or socket.gethostname()
    return f"[{host}]:{cfg.port}" if ":" in host else f"{host}:{cfg.port}"


def _network_address() -> str | None:
    """This computer's address on the network it routes through, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(UNROUTED_PROBE)
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address
