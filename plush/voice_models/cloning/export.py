"""Export: a trained checkpoint becomes a Piper voice (`.onnx` + `.onnx.json`) that `PiperVoice` and Plush load.

The ONNX comes from Piper's own exporter (`piper.train.export_onnx`), so a Plush voice is exactly what Piper's
tools would make. One thing is pinned around it: piper-tts 1.8.0 calls `torch.onnx.export` without choosing an
exporter, and from torch 2.9 on that means the dynamo exporter, which cannot trace VITS (the spline flow's
data-dependent assert stops it). Piper was written for the TorchScript exporter, so that is the one it gets here
(`dynamo=False`); everything else (opset 15, input names, dynamic axes, weight norm removed) is Piper's.

The `.onnx.json` is the base voice's (same phoneme map, espeak voice and sample rate: the training data were
phonemized with them) with the new voice's name, the dataset's language and Plush's provenance added.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.cloning.warm_start import WARM_START_KEY, import_training, read_checkpoint

log = get_logger(__name__)


class ExportError(PlushError):
    """A checkpoint could not be turned into a Piper voice."""


@dataclass(frozen=True)
class ExportedVoice:
    onnx: Path
    config: Path
    seconds: float


def read_checkpoint_record(checkpoint: Path) -> dict[str, Any]:
    """What Plush recorded in a checkpoint (base voice, its config, training settings), and `trained_steps` (the
    batches it was trained for, from Lightning's own count); {} for a foreign one."""
    data = read_checkpoint(checkpoint)
    record = dict(data.get(WARM_START_KEY, {}))
    if isinstance(data.get("global_step"), int):
        record["trained_steps"] = data["global_step"] // 2  # Lightning counts both optimizers' steps
    return record


def _not_numbers(checkpoint: Path) -> int:
    """How many of the generator's tensors hold a NaN or an infinity (a diverged run; Piper's exporter would fail
    on them with a page of `tensor([nan, ...])`)."""
    torch = import_training()
    state = read_checkpoint(checkpoint).get("state_dict", {})
    return sum(
        1
        for name, value in state.items()
        if name.startswith("model_g.") and torch.is_tensor(value) and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    )  # fmt: skip


def export_voice(
    checkpoint: Path,
    onnx_path: Path,
    *,
    voice_config: dict[str, Any],
    espeak_voice: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> ExportedVoice:
    """Run Piper's exporter on `checkpoint` into `onnx_path` and write its `.onnx.json` from `voice_config`."""
    if not checkpoint.is_file():
        raise ExportError(f"no checkpoint at {checkpoint}")
    if broken := _not_numbers(checkpoint):
        raise ExportError(
            f"{checkpoint.name} is not a voice: {broken} of its generator's weights are not numbers (NaN or "
            "infinite), so training diverged. Train again with a lower --learning-rate (Piper's is 0.0002) or "
            "more --frozen-steps"
        )
    import_training()
    from piper.train import export_onnx

    started = time.perf_counter()
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    partial = onnx_path.with_name(onnx_path.name + ".partial.onnx")
    argv = ["piper.train.export_onnx", "--checkpoint", str(checkpoint), "--output-file", str(partial)]
    try:
        with _torchscript_exporter(), _arguments(argv):
            export_onnx.main()
    except Exception as exc:  # torch export errors vary
        partial.unlink(missing_ok=True)
        raise ExportError(f"Piper's exporter failed on {checkpoint.name}: {exc}") from exc
    config = dict(voice_config)
    if espeak_voice:
        config["espeak"] = {**config.get("espeak", {}), "voice": espeak_voice}
        config["language"] = {"code": espeak_voice}
    config["dataset"] = onnx_path.stem
    config["plush"] = {**config.get("plush", {}), **(provenance or {})}
    config_path = Path(f"{onnx_path}.json")
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    partial.replace(onnx_path)
    seconds = time.perf_counter() - started
    log.info("voice_exported", onnx=str(onnx_path), seconds=round(seconds, 1))
    return ExportedVoice(onnx_path, config_path, seconds)


@contextmanager
def _torchscript_exporter() -> Iterator[None]:
    """torch.onnx.export as piper-tts was written for: the TorchScript exporter (see the module docstring)."""
    import torch.onnx

    original = torch.onnx.export

    def export(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original


@contextmanager
def _arguments(argv: list[str]) -> Iterator[None]:
    """Piper's exporter is a command (argparse on sys.argv): give it its arguments for the call."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved
