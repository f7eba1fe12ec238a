"""The `plush` command: run the server, the plush, a text chat; manage models and configuration.

Every subcommand takes `--config FILE` (else $PLUSH_CONFIG, ./plush.toml, ~/.config/plush/plush.toml). Errors
Plush raises on purpose are printed as one clear line with exit status 1, never as a traceback. A side's
packages (the server's, the bot's, the dashboard's) are imported only inside the subcommand that runs, so a plush
with `plush[device]` alone has every command it uses; another one names the extra to install (plush/extras.py).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from plush import __version__
from plush.cli.cluster import cluster_app
from plush.cli.console import ConfigOption, err, out
from plush.cli.dashboard import dashboard_app
from plush.cli.memory import memory_app, persona_app
from plush.cli.models import models_app
from plush.cli.pair import pair_app
from plush.cli.telegram import telegram_app
from plush.cli.voice import voice_app
from plush.config import PlushConfig, default_config_text, find_config_file, load_config, masked
from plush.errors import PlushError
from plush.extras import missing_extra
from plush.logs import setup_logging

app = typer.Typer(
    help="Plush: a voice companion that lives inside a plush toy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show or create the configuration file.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(memory_app, name="memory")
app.add_typer(persona_app, name="persona")
app.add_typer(pair_app, name="pair")
app.add_typer(telegram_app, name="telegram")
app.add_typer(dashboard_app, name="dashboard")
app.add_typer(voice_app, name="voice")
app.add_typer(cluster_app, name="cluster")

ServerOption = Annotated[str | None, typer.Option("--server", "-s", help="host:port of the Plush server.")]


def _load(config: Path | None, **overrides: dict[str, Any]) -> PlushConfig:
    """The configuration with the command's flags on top; a flag that was not given overrides nothing."""
    given = {section: {k: v for k, v in values.items() if v is not None} for section, values in overrides.items()}
    sections: dict[str, Any] = {section: values for section, values in given.items() if values}
    cfg = load_config(config, **sections)
    setup_logging(cfg.log_level)
    return cfg


def _version(value: bool) -> None:
    if value:
        out.print(f"plush {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Press the button (space bar), speak, release: the companion answers in its own voice."""


@app.command()
def server(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (0.0.0.0 for the network).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    allow_open: Annotated[
        bool, typer.Option("--allow-open", help="Listen on the network even with no plush paired (anyone may talk).")
    ] = False,
) -> None:
    """Run the companion server (gRPC) until Ctrl+C."""
    cfg = _load(config, server={"host": host, "port": port, "allow_open": allow_open or None})
    from plush.server.app import serve_forever

    def ready(bound: int) -> None:
        out.print(f"Plush server listening on {cfg.server.host}:{bound} (Ctrl+C stops it)")

    asyncio.run(serve_forever(cfg, on_ready=ready))


device_app = typer.Typer(
    help="Run the plush on this computer (hold or tap the space bar, or the paw's button), or check it.",
    invoke_without_command=True,
)
app.add_typer(device_app, name="device")


@device_app.callback()
def device(
    ctx: typer.Context,
    config: ConfigOption = None,
    server: ServerOption = None,
    audio_file: Annotated[
        Path | None,
        typer.Option("--audio-file", help="Take one turn from this audio file instead of the microphone."),
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option("--output-file", help="Write the reply to this WAV file instead of the speaker."),
    ] = None,
) -> None:
    """Run the plush on this computer: press (or hold/tap the space bar) to talk; q quits the keyboard mode."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load(config, device={"server": server})
    if output_file is not None and audio_file is None:
        raise PlushError("--output-file needs --audio-file (the interactive plush plays through the speaker)")
    from plush.device.session import run_device

    sys.exit(asyncio.run(run_device(cfg, audio_file=audio_file, output_file=output_file, console=out)))


@device_app.command("doctor")
def device_doctor(config: ConfigOption = None, server: ServerOption = None) -> None:
    """Check the microphone, speaker, button board, server and speech model, and say what to fix."""
    cfg = _load(config, device={"server": server})
    from plush.device.doctor import run_checks

    results = asyncio.run(run_checks(cfg))
    for check in results:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        out.print(f"{mark} {check.name}: {escape(check.found)}", highlight=False)
        if not check.ok and check.fix:
            out.print(f"       fix: {escape(check.fix)}", highlight=False)
    failed = [c.name for c in results if not c.ok]
    if failed:
        raise PlushError(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    out.print("[green]this plush is ready[/]")


@app.command()
def chat(
    config: ConfigOption = None,
    server: ServerOption = None,
    show_backend: Annotated[bool, typer.Option(help="After each reply, show which LLM answered and why.")] = False,
    conversation: Annotated[str, typer.Option(help="Conversation id (memory) to talk in.")] = "",
) -> None:
    """Chat in text. Reads lines from the keyboard or from a pipe (echo hi | plush chat)."""
    cfg = _load(config, device={"server": server})
    from plush.cli.chat import chat_loop
    from plush.device.paired_server import open_client

    async def run() -> None:
        async with open_client(cfg) as client:
            await client.wait_ready(cfg.device.connect_timeout_s)
            await chat_loop(
                client,
                lines=sys.stdin,
                out=sys.stdout,
                show_backend=show_backend,
                conversation_id=conversation,
                interactive=sys.stdin.isatty(),
            )

    asyncio.run(run())


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    import tomli_w

    cfg = load_config(config)
    source = find_config_file(config)
    out.print(f"# from: {source or 'built-in defaults'} + environment", markup=False, highlight=False)
    data = _drop_none(masked(cfg))
    out.print(tomli_w.dumps(data), markup=False, highlight=False)


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.")] = Path("plush.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write the commented default configuration to a file to edit."""
    if path.exists() and not force:
        raise PlushError(f"{path} exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(default_config_text(), encoding="utf-8")
    out.print(f"wrote {path}")


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data


def main() -> None:
    """Entry point: run the app, turning Plush errors (and a package of an extra this machine lacks, such as
    the server's on a plush) into one readable line."""
    try:
        app()
    except PlushError as exc:
        _fail(exc)
    except ModuleNotFoundError as exc:
        readable = missing_extra(exc)
        if readable is None:
            raise
        _fail(readable)
    except KeyboardInterrupt:
        sys.exit(130)


def _fail(exc: PlushError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    sys.exit(1)
