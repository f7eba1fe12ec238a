"""Bases a clone is fine-tuned from: an official Piper training checkpoint from the Hub, or any Piper ONNX voice.

`plush voice base download` fetches an official checkpoint (rhasspy/piper-checkpoints on the Hugging Face Hub:
the `.ckpt` and its `config.json`) into `<models dir>/voice-bases/<name>/`. Where the Hub cannot be reached,
any Piper ONNX voice is a base too (`--base piper-en-joe-medium`, a path, or one of the owner's own voices):
`warm_start` rebuilds a checkpoint from it. `resolve_base` turns what the user typed into one of the two.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plush.errors import ModelMissingError, PlushError
from plush.voice_models.cloning.voice_store import VoiceStore
from plush.voice_models.model_store import ModelStore

BASES_FOLDER = "voice-bases"
HUB_REPO = "rhasspy/piper-checkpoints"
HUB_BASES = {
    "lessac-medium": "en/en_US/lessac/medium",
    "ryan-medium": "en/en_US/ryan/medium",
    "amy-medium": "en/en_US/amy/medium",
}
"""Official checkpoints worth starting from (medium: the size Plush's server speaks fastest with good quality)."""


class BaseError(PlushError):
    """A base cannot be found or fetched."""


@dataclass(frozen=True)
class Base:
    kind: Literal["onnx", "checkpoint"]
    path: Path
    """The `.onnx` (its `.onnx.json` beside it) or the `.ckpt` (its `config.json` beside it)."""
    name: str


def bases_root(models: ModelStore) -> Path:
    return models.root / BASES_FOLDER


def download_base(name: str, models: ModelStore) -> Path:
    """Fetch an official Piper checkpoint from the Hub; returns its `.ckpt`."""
    if name not in HUB_BASES:
        raise BaseError(f"unknown base '{name}'; known: {', '.join(HUB_BASES)}")
    folder = HUB_BASES[name]
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BaseError("downloading a base needs huggingface-hub") from exc
    try:
        files = [f for f in HfApi().list_repo_files(HUB_REPO) if f.startswith(folder + "/")]
        checkpoints = sorted(f for f in files if f.endswith(".ckpt"))
        if not checkpoints:
            raise BaseError(f"{HUB_REPO} has no checkpoint under {folder}")
        dest = bases_root(models) / name
        dest.mkdir(parents=True, exist_ok=True)
        ckpt = Path(hf_hub_download(HUB_REPO, checkpoints[-1], local_dir=dest / "hub"))
        config = Path(hf_hub_download(HUB_REPO, f"{folder}/config.json", local_dir=dest / "hub"))
    except BaseError:
        raise
    except Exception as exc:  # offline mode, DNS, HTTP errors all differ
        raise BaseError(
            f"the Hugging Face Hub cannot be reached ({type(exc).__name__}); fine-tune from an ONNX voice instead: "
            "plush voice train NAME --dataset DIR --base piper-en-joe-medium"
        ) from exc
    shutil.copyfile(ckpt, dest / f"{name}.ckpt")
    shutil.copyfile(config, dest / "config.json")
    shutil.rmtree(dest / "hub", ignore_errors=True)
    return dest / f"{name}.ckpt"


def resolve_base(spec: str, models: ModelStore) -> Base:
    """A downloaded base's name, one of the owner's voices, a known Piper voice, or a path (.onnx or .ckpt)."""
    downloaded = bases_root(models) / spec / f"{spec}.ckpt"
    if downloaded.is_file():
        return Base("checkpoint", downloaded, spec)
    voices = VoiceStore.in_models(models.root)
    if voices.has(spec):
        return Base("onnx", voices.get(spec).onnx, spec)
    path = Path(spec).expanduser()
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise BaseError(f"no checkpoint at {path}")
        return Base("checkpoint", path, path.stem)
    if spec in HUB_BASES:
        raise BaseError(f"base '{spec}' is not downloaded: plush voice base download {spec}")
    try:
        onnx = models.resolve(spec, "tts")
    except ModelMissingError as exc:
        raise BaseError(f"base '{spec}': {exc}") from exc
    return Base("onnx", onnx, onnx.stem)


def checkpoint_voice_config(ckpt: Path) -> dict[str, object]:
    """The `config.json` (a Piper voice config) that comes with a downloaded checkpoint."""
    config = ckpt.with_name("config.json")
    if not config.is_file():
        raise BaseError(f"{ckpt} has no config.json beside it (the voice's phoneme map and sample rate)")
    data: dict[str, object] = json.loads(config.read_text(encoding="utf-8"))
    return data
