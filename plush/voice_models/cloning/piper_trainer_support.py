"""What Piper's trainer needs from Plush: its missing alignment extension, and the warm start's frozen first phase.

**Alignment.** piper-tts 1.8.0's wheel ships the trainer without its compiled monotonic alignment search
(`piper/train/vits/monotonic_align` has no `core` extension and not even the `.pyx` to build it), so the first
training step fails with "No module named ...monotonic_align.core". `install_alignment` supplies it from
`monotonic-alignment-search` (the same glow-tts/VITS Cython code, kept as a package with wheels). That package
takes the glow-tts layout (text, frames); VITS passes (frames, text), so the call transposes, and a test checks
it against the package's own numpy reference.

**Frozen first phase.** A warm-start checkpoint (see `warm_start`) holds a real voice's generator next to freshly
initialised training parts (posterior encoder, posterior duration flows, discriminators). Training everything at
once would let the untrained parts' large early gradients pull the real voice's weights away before those parts
make sense. `FreezeWarmStartedParts` keeps the parameters that came from the ONNX from learning for
`frozen_steps` optimizer steps; then all of them learn. It also writes the warm-start record into every
checkpoint saved, so any checkpoint can be exported on its own.

This file imports only torch, lightning and numpy (never Plush): a GPU job (`plush voice train --job DIR`) carries
a copy of it to machines without Plush, where Piper's own CLI loads it as a callback
(`python -m piper.train fit --trainer.callbacks+=piper_trainer_support.FreezeWarmStartedParts ...`), which also
installs the alignment at import.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import lightning
import numpy as np
import torch

WARM_START_KEY = "plush_warm_start"
_ALIGNMENT = "piper.train.vits.monotonic_align"
_LOGGER = logging.getLogger(__name__)


def maximum_path_c(paths: Any, values: Any, t_ys: Any, t_xs: Any) -> None:
    """VITS's `maximum_path_c` (paths, values: [batch, frames, text]) on the packaged glow-tts implementation."""
    from monotonic_alignment_search.core import maximum_path_c as glow_maximum_path

    transposed = np.zeros((paths.shape[0], paths.shape[2], paths.shape[1]), dtype=np.int32)
    glow_maximum_path(transposed, np.ascontiguousarray(values.transpose(0, 2, 1)), t_xs, t_ys)
    paths[...] = transposed.transpose(0, 2, 1)


def install_alignment() -> None:
    """Make `piper.train.vits.monotonic_align` importable: its own extension if built, else the packaged one."""
    try:
        __import__(_ALIGNMENT)
        return
    except ImportError:
        pass
    package = types.ModuleType(f"{_ALIGNMENT}.monotonic_align")
    package.__path__ = []
    core = types.ModuleType(f"{_ALIGNMENT}.monotonic_align.core")
    core.maximum_path_c = maximum_path_c  # type: ignore[attr-defined]
    package.core = core  # type: ignore[attr-defined]
    sys.modules[package.__name__] = package
    sys.modules[core.__name__] = core
    __import__(_ALIGNMENT)


class FreezeWarmStartedParts(lightning.Callback):
    """Freeze the parameters a warm start took from an ONNX voice until `frozen_steps` optimizer steps.

    With `report_every` (a job's run.sh), it also prints a progress line every that many batches, and when the
    frozen phase ends: Lightning's own bar counts epochs, and with only steps set it reads "Epoch 0/-2".
    """

    def __init__(self, warm_start_checkpoint: str, frozen_steps: int = 1000, report_every: int = 0) -> None:
        super().__init__()
        install_alignment()
        self.frozen_steps = frozen_steps
        self.report_every = report_every
        # Tensors and plain values only: the job's checkpoint cannot run code on the machine that trains it.
        data = torch.load(warm_start_checkpoint, map_location="cpu", weights_only=True, mmap=True)
        self.record: dict[str, Any] = dict(data.get(WARM_START_KEY, {}))
        self.frozen_names = {k.removeprefix("model_g.") for k in self.record.get("from_onnx", [])}
        self.frozen = False

    def _say(self, message: str, *args: Any) -> None:
        if self.report_every:
            print(message % args, flush=True)
        else:
            _LOGGER.info(message, *args)

    def _set(self, module: lightning.LightningModule, frozen: bool) -> None:
        generator: torch.nn.Module = module.model_g  # type: ignore[assignment]
        for name, parameter in generator.named_parameters():
            if name in self.frozen_names:
                parameter.requires_grad_(not frozen)
        self.frozen = frozen

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.global_step < self.frozen_steps and self.frozen_names:
            self._set(pl_module, True)
            self._say(
                "warm start: %s base parameters frozen for %s steps", len(self.frozen_names), self.frozen_steps // 2
            )

    def on_train_batch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.frozen and trainer.global_step >= self.frozen_steps:
            self._set(pl_module, False)
            self._say("warm start: step %s, the whole generator learns now", trainer.global_step // 2)

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, *args: Any) -> None:
        step, total = trainer.global_step // 2, trainer.max_steps // 2  # two optimizers: generator, discriminator
        if not self.report_every or (step % self.report_every and step != total):
            return
        metrics = trainer.callback_metrics
        losses = " ".join(f"{k} {float(metrics[k]):.2f}" for k in ("loss_g", "loss_d") if k in metrics)
        phase = "base frozen" if self.frozen else "every part learning"
        self._say("step %s/%s (%s) %s", step, total, phase, losses)

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.record:
            checkpoint[WARM_START_KEY] = self.record
