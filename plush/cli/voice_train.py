"""`plush voice` (the model half): base, train, import-checkpoint, export, check, use, list, remove.

From a prepared dataset to the server speaking in the owner's voice: `train` fine-tunes Piper's trainer from a
base (an official checkpoint, or any Piper ONNX voice via the warm start) and exports the result into the voice
store; `check` scores it beside its base; `use` switches the running server to it. Heavy imports (torch, piper's
trainer, Whisper) happen inside the commands, so `plush --help` stays fast and works without the train extra.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from plush.cli.console import ConfigOption, out
from plush.config import PlushConfig, load_config
from plush.logs import command_level, setup_logging
from plush.voice_models.cloning.voice_store import DEFAULT, VoiceStore, check_voice_name
from plush.voice_models.model_store import ModelStore

TRAINING_FOLDER = "voice-training"
FIT_STEPS = 300
"""Fit-to-base steps before a fine-tune from an ONNX base. The base's own held-out speech reconstructed through the
posterior encoder at CER 0.20-0.28 after 100-200 steps, from 1.00, still falling (bench/README.md, #27); 300 take
about 15 minutes on one quiet CPU core."""
LANGUAGES = {"en": "en-us", "ko": "ko"}
NameArg = Annotated[str, typer.Argument(help="The voice's name (lower-case letters, digits, '-', '_').")]


def _setup(config: Path | None) -> tuple[PlushConfig, ModelStore, VoiceStore]:
    cfg = load_config(config)
    setup_logging(command_level(cfg.log_level))
    models = ModelStore.from_config(cfg.models)
    return cfg, models, VoiceStore.in_models(models.root)


def add_train_commands(app: typer.Typer) -> None:
    """Add the model half of `plush voice` to the `voice` Typer group."""
    from plush.cli import voice_check  # it imports this module's helpers

    base_app = typer.Typer(help="Bases to fine-tune from (official Piper checkpoints).", no_args_is_help=True)
    app.add_typer(base_app, name="base")
    base_app.command("download")(base_download)
    app.command("train")(train)
    app.command("import-checkpoint")(import_checkpoint)
    app.command("export")(export)
    app.command("check")(voice_check.check)
    app.command("use")(voice_check.use)
    app.command("list")(list_voices)
    app.command("remove")(remove)


def base_download(
    name: Annotated[str, typer.Argument(help="lessac-medium, ryan-medium or amy-medium.")] = "lessac-medium",
    config: ConfigOption = None,
) -> None:
    """Fetch an official Piper training checkpoint from the Hugging Face Hub (a base for `train --base NAME`).

    It is fetched at a pinned commit of rhasspy/piper-checkpoints and kept only if its SHA-256 matches.
    """
    from plush.voice_models.cloning.bases import download_base

    _, models, _ = _setup(config)
    out.print(f"base {name}: {download_base(name, models)}", highlight=False)


def train(  # noqa: PLR0917 - a command's options
    name: NameArg,
    dataset: Annotated[Path, typer.Option(help="A prepared dataset folder (metadata.csv + wavs/).")],
    base: Annotated[str, typer.Option(help="Base: a Piper voice name or .onnx, your voice, a .ckpt.")] = (
        "piper-en-joe-medium"
    ),
    language: Annotated[str | None, typer.Option(help="en, ko or an espeak-ng voice (default: the dataset's).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps (default: by dataset size).")] = None,
    frozen_steps: Annotated[
        int | None, typer.Option(min=0, help="First steps with the base frozen (default: a tenth of the steps).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Clips per step (default: 16 on a GPU, 2 on CPU).")
    ] = None,
    segment_size: Annotated[
        int, typer.Option(min=1024, help="Samples per training slice (smaller: smoke runs).")
    ] = 8192,
    learning_rate: Annotated[
        float, typer.Option(min=1e-7, max=1.0, help="The optimizers' learning rate (Piper's default).")
    ] = 2e-4,
    fit_steps: Annotated[
        int, typer.Option(min=0, help="Steps fitting an ONNX base's missing parts to its own speech first.")
    ] = FIT_STEPS,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on this CPU although it takes days (smoke runs).")] = False,
    job: Annotated[Path | None, typer.Option(help="Write a self-contained job folder for a CUDA machine.")] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming this voice's run.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Fine-tune a voice on your dataset (resumes an interrupted run), then export it into the voice store."""
    import shutil

    from plush.voice_models.cloning import training as tr
    from plush.voice_models.cloning.bases import checkpoint_voice_config, resolve_base
    from plush.voice_models.cloning.warm_start import (
        import_training,
        voice_config,
        warm_start_checkpoint,
        warm_start_from_checkpoint,
    )

    check_voice_name(name)
    _, models, voices = _setup(config)
    import_training()
    info = tr.inspect_dataset(dataset)
    chosen = resolve_base(base, models)
    base_config = voice_config(chosen.path) if chosen.kind == "onnx" else checkpoint_voice_config(chosen.path)
    espeak = LANGUAGES.get(language or "", language) or info.espeak_voice or base_config["espeak"]["voice"]  # type: ignore[index]
    accelerator = "gpu" if job else tr.require_accelerator(cpu)
    run_dir = models.root / TRAINING_FOLDER / name
    previous = tr.read_run_file(run_dir)
    settings = {"dataset": str(dataset.resolve()), "base": str(chosen.path), "espeak_voice": espeak}
    if restart or (previous and {k: previous.get(k) for k in settings} != settings):
        shutil.rmtree(run_dir, ignore_errors=True)  # another dataset or base: not a run to resume
    warm = run_dir / tr.WARM_CHECKPOINT
    if not warm.is_file():
        out.print(f"warm start from {chosen.path.name} ...", highlight=False)
        if chosen.kind == "onnx":
            made = warm_start_checkpoint(chosen.path, warm)
            out.print(f"  {len(made.from_onnx)} parameters from the ONNX voice, {len(made.fresh)} start fresh")
            if fit_steps:
                _fit_to_base(warm, chosen.path, fit_steps)
        else:
            warm_start_from_checkpoint(chosen.path, base_config, warm)
    defaults = tr.plan_for(info, on_gpu=accelerator == "gpu")
    max_steps = steps or defaults.max_steps
    if frozen_steps is None:  # the plan's share of whatever number of steps was asked for
        frozen_steps = min(max_steps, max_steps * defaults.frozen_steps // defaults.max_steps)
    plan = tr.TrainPlan(
        max_steps=max_steps,
        frozen_steps=frozen_steps,
        batch_size=min(batch_size or defaults.batch_size, info.clips),
        checkpoint_every=defaults.checkpoint_every,
        validation_split=defaults.validation_split,
        segment_size=segment_size,
        learning_rate=learning_rate,
    )
    tr.write_run_file(run_dir, **settings, plan=plan, clips=info.clips, minutes=round(info.minutes, 2))
    _warn_if_short(dataset, info.minutes)
    out.print(
        f"dataset: {info.clips} clips, {info.minutes:.1f} min ({espeak}); {plan.max_steps} steps of batch "
        f"{plan.batch_size}, the first {plan.frozen_steps} with the base frozen",
        highlight=False,
    )
    if job is not None:
        from plush.voice_models.cloning.training_job import write_job

        phonemes = run_dir / "phonemes.json"
        tr._write_phoneme_map(warm, phonemes)
        script = write_job(
            job,
            name,
            dataset=info,
            warm_checkpoint=warm,
            hparams=_hparams(warm),
            phoneme_map=phonemes,
            espeak_voice=espeak,
            plan=plan,
        )
        out.print(f"job written: {job}. On a CUDA machine run {script.name}, then: plush voice import-checkpoint "
                  f"{job} --name {name}", highlight=False)  # fmt: skip
        return
    result = _train_with_progress(tr, run_dir, info, warm=warm, espeak=espeak, plan=plan, accel=accelerator)
    resumed = " (resumed)" if result.resumed else ""
    out.print(f"trained {result.steps} steps ({result.seconds_per_step:.1f} s per step){resumed}", highlight=False)
    _export(name, result.checkpoint, voices, espeak, {"steps": result.steps, "base": str(chosen.path)})


def _fit_to_base(warm: Path, onnx: Path, steps: int) -> None:
    """Fit the warm start's fresh parts to the base speaking Plush's prompts (#27), in place, with a bar."""
    from plush.voice_models.cloning.fit_to_base import FitPlan, fit_to_base
    from plush.voice_models.cloning.prompts import builtin_prompts
    from plush.voice_models.cloning.warm_start import voice_config

    language = str(voice_config(onnx).get("language", {}).get("code", "en"))[:2]
    texts = [p.text for p in builtin_prompts("ko" if language == "ko" else "en")]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=out) as progress:  # fmt: skip
        task = progress.add_task("fitting the missing parts to the base's own speech", total=steps)
        fit_to_base(warm, onnx, texts, warm, plan=FitPlan(steps=steps),
                    on_progress=lambda p: progress.update(task, completed=p.step))  # fmt: skip


def _warn_if_short(dataset: Path, minutes: float) -> None:
    """Say so when the dataset is under the minimum `prepare` named for it (its report.json), or under 10 min."""
    from plush.voice_models.cloning.dataset import PrepareOptions

    report = dataset / "report.json"
    minimum = PrepareOptions().min_minutes
    if report.is_file():
        try:
            thresholds = json.loads(report.read_text(encoding="utf-8")).get("thresholds", {})
            minimum = float(thresholds.get("min_minutes", minimum))
        except (ValueError, TypeError, AttributeError):
            pass
    if minutes < minimum:
        out.print(
            f"[yellow]warning:[/] {minutes:.1f} minutes of speech is under the {minimum:g} minutes `plush voice "
            "prepare` asks for: the voice will sound less like you and may mumble. Record more if you can "
            "(plush voice record), and check the result (plush voice check) before using it.",
            highlight=False,
        )


def _train_with_progress(tr: Any, run_dir: Path, info: Any, *, warm: Path, espeak: str, plan: Any, accel: str) -> Any:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[losses]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=out) as progress:
        task = progress.add_task("training", total=plan.max_steps, losses="")

        def report(p: Any) -> None:
            phase = "base frozen" if p.frozen else "all parts"
            losses = f"loss_g {p.loss_g:.1f} loss_d {p.loss_d:.2f}" if p.loss_g is not None else ""
            progress.update(task, completed=p.step, description=f"training ({phase})", losses=losses)

        return tr.train(run_dir, info, warm, espeak_voice=espeak, plan=plan, accelerator=accel, on_progress=report)


def _hparams(checkpoint: Path) -> dict[str, Any]:
    from plush.voice_models.cloning.training import _checkpoint_hparams

    return _checkpoint_hparams(checkpoint)


def _export(name: str, checkpoint: Path, voices: VoiceStore, espeak: str | None, info: dict[str, Any]) -> None:
    from plush.voice_models.cloning.export import ExportError, export_voice, read_checkpoint_record

    record = read_checkpoint_record(checkpoint)
    if "steps" not in info and isinstance(record.get("trained_steps"), int):
        info = {**info, "steps": record["trained_steps"]}  # an imported checkpoint: its own count
    config = record.get("voice_config")
    if not config:
        raise ExportError(f"{checkpoint} does not say which voice it was trained from: export it from its run")
    with out.status(f"exporting {name} with Piper's exporter ..."):
        exported = export_voice(
            checkpoint, voices.onnx_path(name), voice_config=config, espeak_voice=espeak, provenance=info
        )
    fields = {"checkpoint": str(checkpoint), "base": record.get("base"), "exported": time.strftime("%F %T")}
    voices.update_info(name, **{**fields, **info})
    out.print(f"voice {name}: {exported.onnx} (plush voice check {name}; plush voice use {name})", highlight=False)


def import_checkpoint(
    path: Annotated[Path, typer.Argument(help="A trained .ckpt, or a job folder (its newest last.ckpt).")],
    name: Annotated[str, typer.Option(help="Name for the voice in the store.")],
    language: Annotated[str | None, typer.Option(help="en, ko or an espeak-ng voice (default: the job's).")] = None,
    config: ConfigOption = None,
) -> None:
    """Bring a checkpoint trained elsewhere (a `--job` run) into the voice store as a Piper voice."""
    from plush.voice_models.cloning.training_job import newest_checkpoint

    check_voice_name(name)
    _, _, voices = _setup(config)
    checkpoint = newest_checkpoint(path)
    job_file = path / "job.json" if path.is_dir() else checkpoint.parent / "job.json"
    job = json.loads(job_file.read_text(encoding="utf-8")) if job_file.is_file() else {}
    espeak = LANGUAGES.get(language or "", language) or job.get("espeak_voice")
    _export(name, checkpoint, voices, espeak, {"imported_from": str(checkpoint)})


def export(
    name: NameArg,
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint (default: the run's last).")] = None,
    config: ConfigOption = None,
) -> None:
    """Export a training run's checkpoint (default: its last) to ONNX + .onnx.json in the voice store."""
    from plush.voice_models.cloning.training import LAST_CHECKPOINT, read_run_file

    check_voice_name(name)
    _, models, voices = _setup(config)
    run_dir = models.root / TRAINING_FOLDER / name
    chosen = checkpoint or run_dir / LAST_CHECKPOINT
    _export(name, chosen, voices, read_run_file(run_dir).get("espeak_voice"), {"exported_from": str(chosen)})


def list_voices(config: ConfigOption = None) -> None:
    """The voices in the store, which one the server uses, and their check scores."""
    cfg, _, voices = _setup(config)
    active = voices.active()
    table = Table(title=f"Voices in {voices.root}")
    for column in ("name", "active", "base", "steps", "CER (base)", "RTF"):
        table.add_column(column)
    for voice in voices.list():
        checked = voice.info.get("check") or {}
        cer = f"{checked['voice']['cer']:.3f}" if checked else "-"
        if checked and checked.get("base"):
            cer += f" ({checked['base']['cer']:.3f})"
        rtf = f"{checked['voice']['real_time_factor']:.3f}" if checked else "-"
        base = Path(str(voice.info.get("base") or "-")).name
        table.add_row(
            voice.name, "yes" if voice.name == active else "", base, str(voice.info.get("steps", "-")), cer, rtf
        )
    out.print(table)
    if active is None:
        out.print(f"the server speaks with the config's voice ({cfg.tts.voice}); `plush voice use NAME` changes it")


def remove(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete a voice from the store (its training run stays, so it can be exported again)."""
    _, _, voices = _setup(config)
    voices.get(name)
    if not yes and not typer.confirm(f"delete the voice {name}?"):
        raise typer.Exit(1)
    if voices.remove(name):
        out.print(f"removed {name}; it was in use, so the server goes back to the config's voice ({DEFAULT})")
    else:
        out.print(f"removed {name}")
