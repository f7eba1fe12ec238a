"""`plush voice`: make the plush speak in the owner's own voice. This module is the dataset half:
`record` (read sentences aloud, each take checked), `import` (existing recordings or Telegram voice notes, cut and
transcribed for review) and `prepare` (the folder Piper's trainer reads, with a report). Training and export
commands are added to the same group by `plush.cli.voice_train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from plush.cli.console import ConfigOption, out
from plush.config import PlushConfig, data_home, load_config
from plush.errors import PlushError
from plush.languages import check_language_code
from plush.logs import command_level, setup_logging

voice_app = typer.Typer(
    help="Your own voice for the plush: record or import speech, prepare a dataset, train, export and use it.",
    no_args_is_help=True,
)

LanguageOption = Annotated[
    str | None, typer.Option("--language", "-l", help="Language of the speech: en or ko (Whisper codes).")
]

RECORD_HELP = (
    "Read sentences aloud, one take at a time; each take is checked. Resumable.\n\n"
    "Enter starts and stops a take, which is trimmed to the speech and checked: level, clipping, room noise, "
    "and (with Whisper) that the sentence was said. Keep it, redo it or skip the sentence. Ctrl+C or q ends "
    "the sitting with every kept take saved; the same command goes on where you stopped."
)
IMPORT_HELP = (
    "Cut existing recordings or Telegram voice notes into clips and transcribe them, for your review.\n\n"
    "Any audio PyAV decodes (WAV, OGG/Opus, MP3, M4A, FLAC ...) is cut at pauses and transcribed with "
    "Whisper; each clip gets a line in review.tsv: set keep to no for clips to leave out, correct the text, "
    "then run prepare. Importing again adds only new files and keeps your edits."
)
PREPARE_HELP = (
    "Write the dataset Piper's trainer reads, with a report on how much there is and what was left out.\n\n"
    "wavs/*.wav (22,050 Hz mono 16-bit, loudness normalised), metadata.csv (id|text) and report.json "
    "(minutes, clip lengths, clips left out and why, whether it is enough to train and the thresholds used)."
)


def _language(code: str | None) -> str | None:
    """A --language value checked against Whisper's codes ("kr" is an error that suggests "ko")."""
    if code is None:
        return None
    try:
        return check_language_code(code)
    except ValueError as exc:
        raise PlushError(str(exc)) from exc


def _config(config: Path | None) -> PlushConfig:
    cfg = load_config(config)
    setup_logging(command_level(cfg.log_level))
    return cfg


def _transcriber(cfg: PlushConfig) -> Any:
    from plush.voice_models.model_store import ModelStore
    from plush.voice_models.stt import Transcriber

    with out.status(f"loading the speech model {cfg.stt.model} ..."):
        return Transcriber.from_config(cfg.stt, ModelStore.from_config(cfg.models))


def _vad() -> Any:
    from plush.voice_models.vad import SileroVad

    return SileroVad()


@voice_app.command("record", help=RECORD_HELP)
def record(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Session folder (default: recordings/LANGUAGE in Plush's data folder). Resumed if it exists."
        ),
    ] = None,
    *,
    language: LanguageOption = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Your own sentences (one a line) instead of the built-in set.")
    ] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after this many kept takes.")] = None,
    retry_skipped: Annotated[bool, typer.Option("--retry-skipped", help="Bring skipped sentences back.")] = False,
    words_check: Annotated[
        bool, typer.Option("--words-check/--no-words-check", help="Check with Whisper that the sentence was said.")
    ] = True,
    device: Annotated[
        str | None, typer.Option("--input-device", help="Microphone (sounddevice name or index).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Read sentences aloud, one take at a time; each take is checked. Resumable."""
    from plush.voice_models.cloning.microphone import RECORD_RATE, Microphone
    from plush.voice_models.cloning.prompts import builtin_prompts, file_prompts
    from plush.voice_models.cloning.recording import STATE_FILE, RecordingSession, TakeChecker, run_session
    from plush.voice_models.cloning.terminal_ui import TerminalUI

    cfg = _config(config)
    language = _language(language)
    if folder is not None and (folder / STATE_FILE).is_file():
        existing = RecordingSession.load(folder)
        language = language or existing.language
    language = language or (cfg.stt.language if cfg.stt.language != "auto" else "en")
    folder = folder or data_home() / "voice" / "recordings" / language
    prompt_list = file_prompts(prompts) if prompts else builtin_prompts(language)
    session = RecordingSession.open(folder, language=language, prompts=prompt_list, sample_rate=RECORD_RATE)
    if retry_skipped:
        session.retry_skipped()
    pending = session.pending()
    out.print(
        f"[bold]{escape(str(folder))}[/]: {len(session.takes)} of {len(session.prompts)} sentences recorded "
        f"({session.recorded_seconds() / 60:.1f} min), {len(session.skipped)} skipped"
    )
    if not pending:
        out.print("nothing left to record; next: [bold]plush voice prepare[/] " + escape(str(folder)))
        return
    checker = TakeChecker(_vad(), language, _transcriber(cfg) if words_check else None)
    microphone = Microphone(sample_rate=session.sample_rate, device=device or cfg.device.input_device)
    summary = run_session(
        session, TerminalUI(out, device or cfg.device.output_device), microphone, checker, limit=count
    )
    state = "stopped" if summary.interrupted else "done for now"
    out.print(
        f"\n{state}: kept {summary.kept}, redone {summary.redone}, skipped {summary.skipped}; "
        f"{summary.remaining} sentences left. Everything kept is saved in {escape(str(folder))}."
    )
    if summary.remaining:
        out.print("run the same command again to go on.")
    else:
        out.print(f"all recorded; next: plush voice prepare {escape(str(folder))}")


@voice_app.command("import", help=IMPORT_HELP)
def import_(
    paths: Annotated[list[Path] | None, typer.Argument(help="Audio files or folders (searched recursively).")] = None,
    telegram: Annotated[
        bool, typer.Option("--telegram", help="Also the voice notes owners sent to the Telegram bridge.")
    ] = False,
    folder: Annotated[
        Path | None, typer.Option("--out", "-o", help="Import folder (default: import/ in Plush's data folder).")
    ] = None,
    language: LanguageOption = None,
    config: ConfigOption = None,
) -> None:
    """Cut existing recordings or Telegram voice notes into clips and transcribe them, for your review."""
    from plush.voice_models.cloning.importing import find_audio, import_audio, telegram_voice_notes

    cfg = _config(config)
    language = _language(language)
    sources = list(paths or [])
    if telegram:
        notes = telegram_voice_notes(data_home())
        if not notes.is_dir():
            raise PlushError(
                f"no Telegram voice notes in {notes}: the bridge keeps them only when told to (see README, Telegram)"
            )
        sources.append(notes)
    if not sources:
        raise PlushError("give audio files or folders to import, or --telegram")
    files = find_audio(sources)
    if not files:
        raise PlushError(f"no audio files found in {', '.join(str(s) for s in sources)}")
    folder = folder or data_home() / "voice" / "import"
    transcriber, vad = _transcriber(cfg), _vad()
    with _progress() as progress:
        task = progress.add_task("importing", total=len(files))

        def step(path: Path) -> None:
            progress.update(task, description=escape(path.name[:40]))
            progress.advance(task)

        from plush.voice_models.cloning.importing import ImportOptions

        result = import_audio(files, folder, transcriber, vad, options=ImportOptions(language=language), on_file=step)
    out.print(
        f"imported {result.files} file(s): {result.clips} clips, {result.kept} kept ({result.seconds / 60:.1f} min), "
        f"language {result.language or 'unknown'}; {result.already_imported} already imported"
    )
    for source, reason in result.failed.items():
        out.print(f"[red]skipped[/] {escape(source)}: {escape(reason)}")
    out.print(
        f"review and correct {escape(str(folder / 'review.tsv'))}, then: plush voice prepare {escape(str(folder))}"
    )


@voice_app.command("prepare", help=PREPARE_HELP)
def prepare(
    sources: Annotated[list[Path], typer.Argument(help="Recording-session and import folders (one language).")],
    *,
    folder: Annotated[
        Path | None, typer.Option("--out", "-o", help="Dataset folder (default: dataset/ in Plush's data folder).")
    ] = None,
    language: LanguageOption = None,
    loudness: Annotated[float, typer.Option(help="Loudness every clip is brought to (LUFS).")] = -23.0,
    min_minutes: Annotated[float, typer.Option(help="Least minutes of speech that count as enough to train.")] = 10.0,
    min_clips: Annotated[int, typer.Option(help="Least clips that count as enough to train.")] = 100,
) -> None:
    """Write the dataset Piper's trainer reads, with a report on how much there is and what was left out."""
    from plush.voice_models.cloning.dataset import PrepareOptions, SourceClip, collect
    from plush.voice_models.cloning.dataset import prepare as prepare_dataset

    setup_logging("WARNING")
    language = _language(language)
    folder = folder or data_home() / "voice" / "dataset"
    options = PrepareOptions(loudness_lufs=loudness, min_minutes=min_minutes, min_clips=min_clips)
    total = len(collect(sources)[0])
    with _progress() as progress:
        task = progress.add_task("preparing", total=total)

        def step(clip: SourceClip) -> None:
            progress.advance(task)

        report = prepare_dataset(sources, folder, language=language, options=options, on_clip=step)
    _print_report(report, folder)


def _print_report(report: dict[str, Any], folder: Path) -> None:
    lengths = report["clip_seconds"]
    out.print(
        f"[bold]{escape(str(folder))}[/]: {report['clips']} clips, {report['minutes']:.1f} min of {report['language']} "
        f"speech; clips {lengths['min']}-{lengths['max']} s (median {lengths['median']} s)"
    )
    for entry in report["rejected"]:
        out.print(f"  [yellow]left out[/] {escape(entry['id'])}: {escape('; '.join(entry['reasons']))}")
    colour = "green" if report["enough_to_train"] else "yellow"
    out.print(f"[{colour}]{escape(report['advice'])}[/] (report: {escape(str(folder / 'report.json'))})")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
    )


def _add_model_half() -> None:
    """train, import-checkpoint, export, check, use, list, remove and base (plush.cli.voice_train)."""
    from plush.cli.voice_train import add_train_commands

    add_train_commands(voice_app)


_add_model_half()
