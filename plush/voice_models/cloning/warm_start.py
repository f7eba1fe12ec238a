"""Warm start: a trainer checkpoint made from any published Piper ONNX voice, so a clone starts from a real voice.

Piper's maintainers say a voice published only as ONNX cannot be fine-tuned, because the training parts are not
in the file. They are not, but the generator is: `onnx_graph` reads its weights back by the graph's structure,
and here they go into piper-tts's own training model (`piper.train.vits.lightning.VitsModel`, sized from the
same graph). Weight norm, which the ONNX has folded into plain weights, is put back as `v = W, g = |W|` (so
`g * v / |v|` is W again). What the ONNX never had starts fresh from the trainer's own initialisation: the
posterior encoder (`enc_q`), the duration predictor's posterior flows and the one flow inference skips
(`dp.post_*`, `dp.flows.1`) and the discriminators (`model_d`). Training first trains those with the
generator frozen (see `training`); the checkpoint lists which parameters came from the ONNX for that.

The result is an ordinary Lightning checkpoint, fresh optimizer state included, so Piper's own CLI can resume
from it too (`python -m piper.train fit --ckpt_path warm.ckpt ...`). torch is imported only when this runs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.cloning.onnx_graph import OnnxVoiceError, OnnxVoiceWeights, read_onnx_voice

log = get_logger(__name__)

TRAINING_ONLY = ("model_g.enc_q.", "model_g.dp.post_", "model_g.dp.flows.1.")
"""Generator parts that inference never runs, so no ONNX voice has them (`dp.flows.1` is the flow that the
duration predictor's reverse pass drops as "a useless vflow")."""
WARM_START_KEY = "plush_warm_start"
"""Where a warm-start checkpoint records its base and which parameters came from it."""
INSTALL_HINT = "voice training needs torch and Piper's trainer: pip install 'plush[train]'"


class TrainingUnavailableError(PlushError):
    """The training extra (torch, lightning, piper's trainer) is not installed."""


@dataclass(frozen=True)
class WarmStart:
    """A checkpoint made from an ONNX voice, and what went into it."""

    checkpoint: Path
    base: str
    from_onnx: tuple[str, ...]
    """Parameter names (in the checkpoint's state_dict) whose values came from the ONNX graph."""
    fresh: tuple[str, ...]
    """Parameter names that start from the trainer's initialisation."""
    hyperparameters: dict[str, Any]


def import_training() -> Any:
    """The torch module, or a clear error that names the extra to install."""
    try:
        import lightning  # noqa: F401
        import piper.train.vits.lightning  # noqa: F401
        import torch
    except ImportError as exc:
        raise TrainingUnavailableError(f"{INSTALL_HINT} ({exc.name} is missing)") from exc
    _quiet_library_warnings(torch)
    return torch


class CheckpointError(PlushError):
    """A trainer checkpoint that cannot be read, or that asks to unpickle more than weights and settings."""


CHECKPOINT_GLOBALS = ("pathlib.PosixPath", "pathlib.PurePosixPath", "pathlib.WindowsPath", "pathlib.PureWindowsPath")
"""What a checkpoint may name besides tensors and plain values: the paths Piper's older trainer kept in its
hyper-parameters (the dataset's). Nothing else is ever unpickled, so no checkpoint can run code."""


def read_checkpoint(path: Path, *, mmap: bool = True) -> dict[str, Any]:
    """A trainer checkpoint's contents, read with `weights_only=True` (tensors, plain values and
    `CHECKPOINT_GLOBALS` only): one fetched from the Hub or brought back from a job on another machine cannot
    run code here. A file that asks for more is refused with what it asked for."""
    import pathlib
    import pickle

    torch = import_training()
    allowed = [getattr(pathlib, name.split(".")[1]) for name in CHECKPOINT_GLOBALS]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        asked = str(exc).split("\n", 1)[0]
        raise CheckpointError(
            f"{path} is refused: it holds more than weights and settings ({asked}), and Plush never runs code from "
            "a checkpoint. Use a checkpoint Piper's trainer saved, or retrain it"
        ) from exc
    except (OSError, RuntimeError, ValueError, EOFError) as exc:  # not a torch file, cut short, not a zip
        raise CheckpointError(f"{path} is not a readable trainer checkpoint: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a trainer checkpoint (it holds a {type(data).__name__})")
    return data


def _quiet_library_warnings(torch: Any) -> None:
    """Piper's trainer was written for older torch: its deprecation notices (weight_norm, the TorchScript ONNX
    exporter's shape inference) say nothing an owner can act on, so `plush voice` does not print them."""
    warnings.filterwarnings("ignore", message=r".*weight_norm.*", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx\..*")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key.*")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)


def voice_config(onnx_path: Path) -> dict[str, Any]:
    """The voice's `.onnx.json` (phoneme map, sample rate, espeak voice), which every Piper voice has."""
    config_path = Path(f"{onnx_path}.json")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OnnxVoiceError(f"a Piper voice needs its {config_path.name} beside it: {exc}") from exc
    return config


def warm_start_checkpoint(onnx_path: Path, checkpoint: Path, *, seed: int = 1234) -> WarmStart:
    """Write a trainer checkpoint whose generator is the ONNX voice's; returns what was taken and what is fresh."""
    torch = import_training()
    from lightning import __version__ as lightning_version
    from piper.train.vits.lightning import VitsModel

    config = voice_config(onnx_path)
    weights = read_onnx_voice(onnx_path)
    shape = weights.hyperparameters()
    hparams = {
        **shape,
        "sample_rate": int(config.get("audio", {}).get("sample_rate", 22050)),
        "mos_metric": None,  # Piper's UTMOS scorer downloads from the network; Plush scores voices itself
    }
    torch.manual_seed(seed)
    model = VitsModel(**hparams)
    taken = _load_generator(model, weights)
    state = model.state_dict()
    fresh = tuple(k for k in state if k not in taken)
    leftover = [k for k in fresh if k.startswith("model_g.") and not k.startswith(TRAINING_ONLY)]
    if leftover:
        raise OnnxVoiceError(f"{onnx_path.name} lacks generator weights inference needs: {', '.join(leftover[:5])}")
    optimizers, schedulers = model.configure_optimizers()  # type: ignore[no-untyped-call]
    record = {"base": str(onnx_path), "from_onnx": sorted(taken), "voice_config": config}
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning_version,
            "state_dict": state,
            "hyper_parameters": dict(model.hparams),
            "hparams_name": "kwargs",
            "optimizer_states": [o.state_dict() for o in optimizers],
            "lr_schedulers": [s.state_dict() for s in schedulers],
            "callbacks": {},
            WARM_START_KEY: record,
        },
        partial,
    )
    partial.replace(checkpoint)
    log.info("warm_start_written", base=onnx_path.name, checkpoint=str(checkpoint), taken=len(taken), fresh=len(fresh))
    return WarmStart(checkpoint, onnx_path.stem, tuple(sorted(taken)), fresh, hparams)


def warm_start_from_checkpoint(source: Path, config: dict[str, Any], checkpoint: Path) -> WarmStart:
    """A warm start from an official Piper training checkpoint: every matching parameter is copied (as Piper's
    own `warmstart_ckpt` does), nothing is frozen (all parts were trained), and Plush's record is added."""
    torch = import_training()
    from lightning import __version__ as lightning_version
    from piper.train.vits.lightning import VitsModel

    data = read_checkpoint(source, mmap=False)
    try:
        old_state, old_hparams = data["state_dict"], dict(data.get("hyper_parameters", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise OnnxVoiceError(f"{source} is not a Piper training checkpoint: {exc}") from exc
    defaults = VitsModel.__init__.__code__.co_varnames
    hparams = {k: v for k, v in old_hparams.items() if k in defaults and k not in ("dataset", "self")}
    hparams.update(mos_metric=None, num_symbols=int(config.get("num_symbols", hparams.get("num_symbols", 256))))
    model = VitsModel(**hparams)
    state = model.state_dict()
    copied = {k for k, v in old_state.items() if k in state and tuple(state[k].shape) == tuple(v.shape)}
    if not any(k.startswith("model_g.dec.") for k in copied):
        raise OnnxVoiceError(f"{source}: no generator weights fit Piper's current trainer")
    model.load_state_dict({**state, **{k: old_state[k] for k in copied}})
    optimizers, schedulers = model.configure_optimizers()  # type: ignore[no-untyped-call]
    record = {"base": str(source), "from_onnx": [], "voice_config": config}
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning_version,
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "hparams_name": "kwargs",
            "optimizer_states": [o.state_dict() for o in optimizers],
            "lr_schedulers": [s.state_dict() for s in schedulers],
            "callbacks": {},
            WARM_START_KEY: record,
        },
        checkpoint,
    )
    fresh = tuple(k for k in state if k not in copied)
    return WarmStart(checkpoint, source.stem, tuple(sorted(copied)), fresh, dict(model.hparams))


def _load_generator(model: Any, weights: OnnxVoiceWeights) -> set[str]:
    """Copy every placed weight into `model.model_g`; returns the state_dict keys that were filled."""
    import torch

    state = model.state_dict()
    taken: set[str] = set()
    with torch.no_grad():
        for placed in weights.weights.values():
            value = torch.tensor(np.array(placed.value))  # a copy: ONNX's arrays are read-only
            if placed.transform == "neg_log":
                value = -torch.log(value)
            module_path, param = placed.key.rsplit(".", 1)
            try:
                module = model.model_g.get_submodule(module_path)
            except AttributeError as exc:
                raise OnnxVoiceError(f"the trainer's model has no module for '{placed.source}' ({exc})") from exc
            if param == "weight" and hasattr(module, "weight_v"):  # weight norm, folded in the ONNX
                targets = {"weight_v": value, "weight_g": torch.norm_except_dim(value, 2, 0)}
            else:
                targets = {param: value}
            for name, tensor in targets.items():
                key = f"model_g.{module_path}.{name}"
                if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
                    have = tuple(state[key].shape) if key in state else "nothing"
                    raise OnnxVoiceError(
                        f"ONNX weight '{placed.source}' {tuple(tensor.shape)} does not fit {key} ({have})"
                    )
                state[key].copy_(tensor)
                taken.add(key)
    return taken
