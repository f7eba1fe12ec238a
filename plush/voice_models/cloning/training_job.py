"""`train --job DIR`: everything a fine-tune needs, in one folder to run on any CUDA machine; and bringing it back.

Without a GPU here, the job folder carries the dataset (metadata.csv + wavs), the warm-start checkpoint, the
base voice's phoneme map, `piper_trainer_support.py` (the frozen first phase and the alignment extension Piper's
wheel lacks) and `run.sh`: a pinned virtualenv (torch 2.13.0, piper-tts[train] 1.8.0, lightning 2.6.6) and
Piper's own trainer CLI with this voice's sizes and Plush's plan. Plush is not needed there. Every checkpoint the
job saves carries the warm-start record, so `plush voice import-checkpoint DIR --name NAME` exports the newest
one into the voice store without asking for the base voice again.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from plush.errors import PlushError
from plush.voice_models.cloning.training import METADATA, DatasetInfo, TrainPlan

MANIFEST = "checkpoints.sha256"
"""Written by run.sh when training ends: the SHA-256 of every checkpoint it saved (`sha256sum` form)."""
SUPPORT = "piper_trainer_support.py"
"""Copied into the job: Piper's CLI loads its callback (and the alignment extension) from there."""
PINNED = (
    "torch==2.13.0",
    "piper-tts[train]==1.8.0",
    "lightning==2.6.6",
    "monotonic-alignment-search==0.2.1",
    "onnx==1.23.2",
)
CPU_BATCH = 2
"""Clips per step on a CPU (`ACCELERATOR=cpu`): a GPU's batch would take minutes a step there."""
REPORT_EVERY = 25
"""A progress line every this many steps (Lightning's own bar counts epochs, "Epoch 0/-2", when steps are set)."""
SHAPE_KEYS = (
    "sample_rate", "num_speakers", "hidden_channels", "inter_channels", "filter_channels", "n_heads", "n_layers",
    "kernel_size", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
    "upsample_initial_channel", "upsample_kernel_sizes", "segment_size",
)  # fmt: skip


class JobError(PlushError):
    """A job folder cannot be written, or holds no checkpoint to bring back."""


def write_job(
    job_dir: Path,
    name: str,
    *,
    dataset: DatasetInfo,
    warm_checkpoint: Path,
    hparams: dict[str, Any],
    phoneme_map: Path,
    espeak_voice: str,
    plan: TrainPlan,
) -> Path:
    """Write the job folder (which must be new or empty); returns its `run.sh`."""
    if job_dir.exists() and any(job_dir.iterdir()):
        raise JobError(f"{job_dir} is not empty: give a new folder for the job")
    (job_dir / "dataset" / "wavs").mkdir(parents=True, exist_ok=True)
    rows = [line for line in (dataset.folder / METADATA).read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        clip = row.split("|", 1)[0]
        wav = clip if clip.endswith(".wav") else f"{clip}.wav"
        shutil.copy2(dataset.audio_dir / wav, job_dir / "dataset" / "wavs" / wav)
    (job_dir / "dataset" / METADATA).write_text("\n".join(rows) + "\n", encoding="utf-8")
    shutil.copy2(warm_checkpoint, job_dir / "base.ckpt")
    shutil.copy2(phoneme_map, job_dir / "phonemes.json")
    shutil.copy2(Path(__file__).with_name(SUPPORT), job_dir / SUPPORT)
    run = job_dir / "run.sh"
    run.write_text(_run_script(name, hparams, espeak_voice, plan), encoding="utf-8")
    run.chmod(0o755)
    (job_dir / "README.md").write_text(_readme(name, dataset, plan), encoding="utf-8")
    job = {"name": name, "espeak_voice": espeak_voice, "plan": plan.__dict__, "created": time.strftime("%F %T")}
    (job_dir / "job.json").write_text(json.dumps(job, indent=2), encoding="utf-8")
    return run


def newest_checkpoint(path: Path) -> Path:
    """`path` itself when it is a checkpoint; in a job folder, its newest `last.ckpt` (else any newest .ckpt),
    once it matches the SHA-256 the job's run.sh recorded for it when it finished (`checkpoints.sha256`)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise JobError(f"{path} is neither a checkpoint nor a job folder")
    found = sorted(path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime) or sorted(
        (p for p in path.rglob("*.ckpt") if p.name != "base.ckpt"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise JobError(f"{path} holds no trained checkpoint yet: run its run.sh on a CUDA machine first")
    verify_checkpoint(path, found[-1])
    return found[-1]


def verify_checkpoint(job_dir: Path, checkpoint: Path) -> None:
    """JobError unless `checkpoint` is one the job's run.sh saved and recorded, unchanged since."""
    from plush.voice_models.model_checksums import sha256_of

    manifest = job_dir / MANIFEST
    relative = checkpoint.relative_to(job_dir).as_posix()
    if not manifest.is_file():
        raise JobError(
            f"{job_dir} has no {MANIFEST}: its run.sh did not finish (go on with RESUME=... ./run.sh there), or "
            f"the folder was not made by `plush voice train --job`. To take {relative} anyway, import that file "
            "itself"
        )
    recorded: dict[str, str] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        value, _, name = line.partition("  ")
        recorded[name.strip().removeprefix("./")] = value.strip()
    if recorded.get(relative) != sha256_of(checkpoint):
        what = "is not in" if relative not in recorded else "does not match"
        raise JobError(
            f"{relative} {what} the job's {MANIFEST}: it changed after the job finished (or came from elsewhere), "
            "so it is not imported. Run the job again, or import a checkpoint file you trust by its path"
        )


def _run_script(name: str, hparams: dict[str, Any], espeak_voice: str, plan: TrainPlan) -> str:
    model_args = []
    for key in SHAPE_KEYS:
        value = plan.segment_size if key == "segment_size" else hparams.get(key)
        if value is None:
            continue
        text = json.dumps(value).replace("[", "(").replace("]", ")") if isinstance(value, list | tuple) else value
        model_args.append(f"--model.{key} {shlex.quote(str(text))}")
    args = [
        f"--data.voice_name {shlex.quote(name)}",
        "--data.csv_path dataset/metadata.csv",
        "--data.audio_dir dataset/wavs",
        "--data.cache_dir cache",
        "--data.config_path config.json",
        f"--data.espeak_voice {shlex.quote(espeak_voice)}",
        "--data.phonemes_path phonemes.json",
        f"--data.num_symbols {hparams['num_symbols']}",
        '--data.batch_size "$BATCH"',
        f"--data.validation_split {plan.validation_split}",
        "--data.num_test_examples 0",
        *model_args,
        f"--model.learning_rate {plan.learning_rate}",
        "--model.mos_metric none",
        '--trainer.accelerator "$ACCELERATOR"',
        "--trainer.devices 1",
        '--trainer.max_steps "$(( STEPS * 2 ))"',
        "--trainer.default_root_dir runs",
        "--trainer.enable_progress_bar false",
        "--trainer.callbacks+=piper_trainer_support.FreezeWarmStartedParts",
        "--trainer.callbacks.warm_start_checkpoint base.ckpt",
        '--trainer.callbacks.frozen_steps "$(( FROZEN * 2 ))"',
        '--trainer.callbacks.report_every "$REPORT_EVERY"',
        '--ckpt_path "${RESUME:-base.ckpt}"',
    ]
    cpu_batch = max(1, min(CPU_BATCH, plan.batch_size))
    pins = " ".join(shlex.quote(p) for p in PINNED)
    joined = " \\\n  ".join(args)
    return f"""#!/usr/bin/env bash
# Fine-tune the Plush voice '{name}' with Piper's own trainer on a CUDA machine (Python 3.11, NVIDIA driver).
# Steps count batches; Lightning counts the generator's and the discriminator's updates, hence the "* 2".
# Overrides: PYTHON=/path/python (skip the virtualenv), ACCELERATOR=cpu, MAX_STEPS=N, BATCH_SIZE=N,
# FROZEN_STEPS=N, RESUME=runs/lightning_logs/version_0/checkpoints/last.ckpt (go on after an interruption).
set -euo pipefail
cd "$(dirname "$0")"
ACCELERATOR="${{ACCELERATOR:-gpu}}"
STEPS="${{MAX_STEPS:-{plan.max_steps}}}"
# The frozen first phase keeps the plan's share of the steps ({plan.frozen_steps} of {plan.max_steps}), whatever
# MAX_STEPS asks for: a short job must not spend all its steps frozen and hand back the base voice unchanged.
FROZEN="${{FROZEN_STEPS:-$(( STEPS * {plan.frozen_steps} / {plan.max_steps} ))}}"
if [ "$FROZEN" -gt "$STEPS" ]; then FROZEN="$STEPS"; fi
BATCH="${{BATCH_SIZE:-{plan.batch_size}}}"
if [ "$ACCELERATOR" = cpu ]; then BATCH="${{BATCH_SIZE:-{cpu_batch}}}"; fi
REPORT_EVERY="${{REPORT_EVERY:-{REPORT_EVERY}}}"
echo "training {name}: $STEPS steps of batch $BATCH on $ACCELERATOR; the first $FROZEN with the base frozen," \
  "then $(( STEPS - FROZEN )) with every part learning"
if [ -z "${{PYTHON:-}}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet {pins}
  PYTHON=.venv/bin/python
fi
PYTHONPATH=. "$PYTHON" -m piper.train fit \\
  {joined}
if [ -d runs ]; then find runs -name '*.ckpt' -exec sha256sum {{}} + > {MANIFEST}; fi
echo "done: bring the voice home with  plush voice import-checkpoint $(pwd) --name {name}"
"""


def _readme(name: str, dataset: DatasetInfo, plan: TrainPlan) -> str:
    return f"""# Plush voice training job: {name}

{dataset.clips} clips, {dataset.minutes:.1f} minutes of speech, warm-started from `base.ckpt`.

1. Copy this folder to a machine with a CUDA GPU (any recent NVIDIA card with 8 GB or more; Python 3.11).
2. Run `./run.sh`. It makes a virtualenv with pinned versions (torch 2.13.0, piper-tts 1.8.0, lightning
   2.6.6) and runs Piper's own trainer: {plan.max_steps} steps of batch {plan.batch_size}, the first
   {plan.frozen_steps} with the base voice frozen while the parts its ONNX lacked learn. `MAX_STEPS=N` keeps
   the same share frozen (`FROZEN_STEPS=N` sets it), `ACCELERATOR=cpu` takes batch {CPU_BATCH} (`BATCH_SIZE=N`),
   and the first line it prints says what it will do. Checkpoints land in
   `runs/lightning_logs/version_*/checkpoints/` (`last.ckpt` every epoch); `RESUME=<that last.ckpt> ./run.sh`
   goes on after an interruption.
3. Copy the folder (or just the newest `last.ckpt`) back and run
   `plush voice import-checkpoint <folder> --name {name}`, then `plush voice check {name}` and
   `plush voice use {name}`.
"""
