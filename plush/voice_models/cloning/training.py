"""`train`: fine-tune a voice on the owner's dataset with Piper's own trainer, starting from a base voice.

The dataset is a Piper-trainer folder (`metadata.csv` as `id|text`, `wavs/<id>.wav` at the voice's rate), as
`prepare` writes it. Training runs piper-tts's `VitsModel` and `VitsDataModule` under a Lightning `Trainer` in
this process: from the warm-start checkpoint first (Lightning restores it like any checkpoint), with the parts
the ONNX lacked learning alone for `frozen_steps` (`freeze_callback`), then everything. A run lives in one folder
(`run.json`, `warm.ckpt`, `checkpoints/last.ckpt`, the trainer's cache and CSV logs); running again with the same
dataset and base resumes from `last.ckpt`.

A step here is one batch (a generator and a discriminator update). Defaults scale with the dataset (`plan_for`).
Without a CUDA GPU a real fine-tune would take days, so training refuses unless told `--cpu` (for a smoke run);
`training_job` writes a job folder to run on any CUDA machine instead. torch is imported only when training runs.
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.cloning.warm_start import import_training

log = get_logger(__name__)

METADATA = "metadata.csv"
RUN_FILE = "run.json"
WARM_CHECKPOINT = "warm.ckpt"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class TrainingError(PlushError):
    """Training cannot start or failed; the message says what to change."""


class NoGpuError(TrainingError):
    """No CUDA GPU here, and CPU training was not asked for."""


@dataclass(frozen=True)
class DatasetInfo:
    """A Piper dataset folder, checked: where its clips are and how much speech they hold."""

    folder: Path
    audio_dir: Path
    clips: int
    minutes: float
    sample_rate: int
    espeak_voice: str | None
    """From the folder's report.json when it names one."""


@dataclass(frozen=True)
class TrainPlan:
    """How long and how hard to train; `plan_for` picks these from the dataset's size."""

    max_steps: int
    frozen_steps: int
    batch_size: int
    checkpoint_every: int
    validation_split: float
    learning_rate: float = 2e-4
    segment_size: int = 8192
    """Audio samples per training slice (Piper's default; smaller is faster per step and for smoke runs only)."""


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total: int
    frozen: bool
    loss_g: float | None
    loss_d: float | None
    seconds_per_step: float | None


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    steps: int
    seconds_per_step: float
    """Mean wall time of one step in this run, data loading, validation and checkpoints included."""
    resumed: bool


def inspect_dataset(folder: Path) -> DatasetInfo:
    """Check the dataset folder's format (the trainer would fail later, and less clearly) and measure it."""
    metadata = folder / METADATA
    if not metadata.is_file():
        raise TrainingError(f"{folder} is not a voice dataset: it has no {METADATA} (make one: plush voice prepare)")
    audio_dir = folder / "wavs" if (folder / "wavs").is_dir() else folder
    rows = [line for line in metadata.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise TrainingError(f"{metadata} lists no clips")
    seconds, rates = 0.0, set()
    for number, row in enumerate(rows, start=1):
        clip_id, sep, text = row.partition("|")
        if not sep or not text.strip():
            raise TrainingError(f"{metadata} line {number} is not 'id|text': {row[:60]!r}")
        wav = audio_dir / clip_id if clip_id.endswith(".wav") else audio_dir / f"{clip_id}.wav"
        try:
            with wave.open(str(wav), "rb") as audio:
                if audio.getnchannels() != 1 or audio.getsampwidth() != 2:
                    raise TrainingError(f"{wav.name} must be mono 16-bit (run plush voice prepare)")
                rates.add(audio.getframerate())
                seconds += audio.getnframes() / audio.getframerate()
        except (OSError, wave.Error, EOFError) as exc:
            raise TrainingError(f"clip '{clip_id}' of {metadata} cannot be read as a WAV file: {exc}") from exc
    if len(rates) != 1:
        raise TrainingError(f"the clips of {folder} have different sample rates {sorted(rates)}: prepare them again")
    report: dict[str, Any] = {}
    if (folder / "report.json").is_file():
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        except ValueError:
            report = {}
    voice = report.get("espeak_voice")
    return DatasetInfo(
        folder, audio_dir, len(rows), seconds / 60, rates.pop(), voice if isinstance(voice, str) else None
    )


def plan_for(info: DatasetInfo, *, on_gpu: bool) -> TrainPlan:
    """Sensible defaults by dataset size: more speech takes more steps; the fresh parts get a tenth, at least 200.

    Small sets are fine-tuned shorter so the voice does not learn the few sentences by heart.
    """
    if info.minutes < 15:
        steps = 3000
    elif info.minutes < 45:
        steps = 6000
    else:
        steps = 10000
    batch = (32 if info.minutes >= 60 else 16) if on_gpu else 2
    batch = max(1, min(batch, info.clips))
    return TrainPlan(
        max_steps=steps,
        frozen_steps=max(200, steps // 10),
        batch_size=batch,
        checkpoint_every=500 if on_gpu else 50,
        validation_split=0.05 if info.clips >= 40 else 0.0,
    )


def cuda_device() -> str | None:
    """The first CUDA GPU's name, or None."""
    torch = import_training()
    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def require_accelerator(allow_cpu: bool) -> str:
    """'gpu' when CUDA is here; 'cpu' only when allowed; otherwise an error naming the two ways forward."""
    if cuda_device() is not None:
        return "gpu"
    if allow_cpu:
        return "cpu"
    raise NoGpuError(
        "no CUDA GPU found: a fine-tune on this CPU would take days. Write a job to run on any CUDA machine "
        "(plush voice train ... --job DIR, then plush voice import-checkpoint), or train here anyway with --cpu "
        "(fine for a smoke run of a few steps)"
    )


def train(
    run_dir: Path,
    dataset: DatasetInfo,
    warm_checkpoint: Path,
    *,
    espeak_voice: str,
    plan: TrainPlan,
    accelerator: str,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run in `run_dir` to `plan.max_steps`; returns the last checkpoint."""
    import_training()
    import lightning
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from piper.train.vits.dataset import VitsDataModule
    from piper.train.vits.lightning import VitsModel

    from plush.voice_models.cloning.piper_trainer_support import FreezeWarmStartedParts

    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / LAST_CHECKPOINT
    resumed = last.is_file()
    hparams = _checkpoint_hparams(warm_checkpoint)
    hparams.update(
        batch_size=plan.batch_size, learning_rate=plan.learning_rate, segment_size=plan.segment_size, mos_metric=None
    )
    model = VitsModel(**hparams)
    phonemes = run_dir / "phonemes.json"
    _write_phoneme_map(warm_checkpoint, phonemes)
    data = VitsDataModule(
        csv_path=dataset.folder / METADATA,
        audio_dir=dataset.audio_dir,
        cache_dir=run_dir / "cache",
        espeak_voice=espeak_voice,
        config_path=run_dir / "config.json",
        voice_name=run_dir.name,
        sample_rate=hparams["sample_rate"],
        num_symbols=hparams["num_symbols"],
        batch_size=plan.batch_size,
        segment_size=plan.segment_size,
        validation_split=plan.validation_split,
        num_test_examples=0,
        num_workers=0,
        phonemes_path=phonemes,
    )
    timer = _step_timer(plan, on_progress, set_learning_rate=not resumed)
    trainer = lightning.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=plan.max_steps * _optimizer_steps_per_batch(),
        limit_val_batches=1.0 if plan.validation_split > 0 else 0,
        logger=CSVLogger(run_dir, name="logs"),
        callbacks=[
            FreezeWarmStartedParts(str(warm_checkpoint), plan.frozen_steps * _optimizer_steps_per_batch()),
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                save_top_k=0,
                save_last=True,
                every_n_train_steps=plan.checkpoint_every * _optimizer_steps_per_batch(),
            ),
            timer,
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=data, ckpt_path=str(last if resumed else warm_checkpoint))
    except Exception as exc:  # lightning and torch raise many kinds
        raise TrainingError(f"training stopped: {exc}") from exc
    trainer.save_checkpoint(last)
    steps = trainer.global_step // _optimizer_steps_per_batch()
    log.info("training_done", steps=steps, seconds=round(time.perf_counter() - started, 1), checkpoint=str(last))
    return TrainResult(last, steps, timer.mean(), resumed)


def write_run_file(run_dir: Path, **fields: Any) -> None:
    """Record a run's settings (dataset, base, plan, language), so `train` again resumes the same run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fields = {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in fields.items()}
    (run_dir / RUN_FILE).write_text(json.dumps(fields, indent=2, default=str), encoding="utf-8")


def read_run_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _optimizer_steps_per_batch() -> int:
    """Lightning counts each optimizer's step in `global_step`; VitsModel steps two (generator, discriminator)."""
    return 2


def _checkpoint_hparams(checkpoint: Path) -> dict[str, Any]:
    from plush.voice_models.cloning.warm_start import read_checkpoint

    return dict(read_checkpoint(checkpoint)["hyper_parameters"])


def _write_phoneme_map(warm_checkpoint: Path, path: Path) -> None:
    """The base voice's phoneme ids, so the dataset is encoded exactly as the base voice was trained."""
    from plush.voice_models.cloning.export import read_checkpoint_record

    config = read_checkpoint_record(warm_checkpoint).get("voice_config", {})
    id_map = config.get("phoneme_id_map")
    if not id_map:
        from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

        id_map = DEFAULT_PHONEME_ID_MAP
    path.write_text(json.dumps(id_map, ensure_ascii=False), encoding="utf-8")


def _step_timer(
    plan: TrainPlan, on_progress: Callable[[TrainProgress], None] | None, *, set_learning_rate: bool
) -> Any:
    """A Lightning callback that times each step and reports progress (made here: lightning loads lazily).

    With `set_learning_rate` (a new run) it also gives the optimizers the plan's learning rate: the warm-start
    checkpoint's optimizer states, restored with it, would otherwise keep the rate they were saved with.
    """
    import lightning

    class StepTimer(lightning.Callback):
        """Wall time per step: from training start to the latest batch end, over the batches done.

        Timing only the batch itself (as before) left out data loading, validation and checkpoints: it printed
        2.3 s when a step took 8 s of wall time (#27). A mean over wall time counts all of them.
        """

        def __init__(self) -> None:
            self.batches = 0
            self.wall_s = 0.0
            self._started = 0.0

        def on_train_start(self, trainer: Any, *args: Any) -> None:
            self._started = time.perf_counter()
            if set_learning_rate:
                for optimizer in trainer.optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = plan.learning_rate

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self.batches += 1
            self.wall_s = time.perf_counter() - self._started
            if on_progress is None:
                return
            metrics = trainer.callback_metrics
            step = trainer.global_step // _optimizer_steps_per_batch()
            on_progress(
                TrainProgress(
                    step=step,
                    total=plan.max_steps,
                    frozen=step <= plan.frozen_steps,
                    loss_g=float(metrics["loss_g"]) if "loss_g" in metrics else None,
                    loss_d=float(metrics["loss_d"]) if "loss_d" in metrics else None,
                    seconds_per_step=self.mean(),
                )
            )

        def mean(self) -> float:
            return self.wall_s / self.batches if self.batches else 0.0

    return StepTimer()
