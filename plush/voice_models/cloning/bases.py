"""Bases a clone is fine-tuned from: an official Piper training checkpoint from the Hub, or any Piper ONNX voice.

`plush voice base download` fetches an official checkpoint (rhasspy/piper-checkpoints on the Hugging Face Hub:
the `.ckpt` and its `config.json`) into `<models dir>/voice-bases/<name>/`, pinned by the repository's commit and
the file's SHA-256; the digest is kept in the folder's manifest and checked again each time the base is used.
Where the Hub cannot be reached, any Piper ONNX voice is a base too (`--base piper-en-joe-medium`, a path, or one
of the owner's own voices): `warm_start` rebuilds a checkpoint from it. `resolve_base` turns what the user
typed into one of the two.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plush.errors import ModelMissingError, PlushError
from plush.voice_models.cloning.voice_store import VoiceStore
from plush.voice_models.model_checksums import (
    FileRecord,
    check_file,
    hub_etag,
    read_manifest,
    record_file,
    sha256_of,
)
from plush.voice_models.model_sources import one_line
from plush.voice_models.model_store import ModelStore

BASES_FOLDER = "voice-bases"
HUB_REPO = "rhasspy/piper-checkpoints"
HUB_REPO_TYPE = "dataset"
HUB_REVISION = "19ca249c3d7c490dbbefbaf775f74df10681d9a4"
"""The repository's commit every base is fetched at: a commit pins each file's LFS pointer (its SHA-256), so what
arrives is what was there when the pin was chosen, never a file replaced on `main` since."""


@dataclass(frozen=True)
class HubBase:
    """An official checkpoint, named by its exact file (never "the newest .ckpt in the folder")."""

    folder: str
    checkpoint: str
    sha256: str | None = None
    """The file's SHA-256 where it was published beside its name; the download must match it. Where None, the
    file must match the SHA-256 that the Hub's LFS pointer names at `HUB_REVISION` (sent as its ETag)."""

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.checkpoint}"


HUB_BASES = {
    "lessac-medium": HubBase(
        "en/en_US/lessac/medium",
        "epoch=2164-step=1355540.ckpt",
        "ab7e5b8dab40f834b7cc58ae4ad7b7009c954b901e4ddbb784bbe11ce379a1cd",
    ),
    "ryan-medium": HubBase("en/en_US/ryan/medium", "epoch=4641-step=3104302.ckpt"),
    "amy-medium": HubBase("en/en_US/amy/medium", "epoch=6679-step=1554200.ckpt"),
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
    """Fetch an official Piper checkpoint from the Hub, pinned by commit and checksum; returns its `.ckpt`.

    The files land in a scratch folder first and are moved into place only once the checkpoint matches its
    SHA-256 (the pinned one, else the Hub's own at that commit), so a tampered or damaged file is never a base.
    """
    if name not in HUB_BASES:
        raise BaseError(f"unknown base '{name}'; known: {', '.join(HUB_BASES)}")
    base = HUB_BASES[name]
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BaseError("downloading a base needs huggingface-hub") from exc
    dest = bases_root(models) / name
    scratch = dest / "hub"
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(path: str) -> Path:
        return Path(hf_hub_download(HUB_REPO, path, repo_type=HUB_REPO_TYPE, revision=HUB_REVISION, local_dir=scratch))

    try:
        ckpt = fetch(base.path)
        config = fetch(f"{base.folder}/config.json")
    except Exception as exc:  # offline mode, DNS, HTTP errors, an unknown revision all differ
        shutil.rmtree(scratch, ignore_errors=True)
        raise BaseError(
            f"{HUB_REPO}@{HUB_REVISION[:12]} cannot be fetched ({type(exc).__name__}: {one_line(exc)}); fine-tune from "
            "an ONNX voice instead: plush voice train NAME --dataset DIR --base piper-en-joe-medium"
        ) from exc
    try:
        digest = _checked_digest(base, ckpt, scratch)
    except BaseError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.move(ckpt, dest / f"{name}.ckpt")
    shutil.move(config, dest / "config.json")
    shutil.rmtree(scratch, ignore_errors=True)
    record_file(dest, f"{name}.ckpt", FileRecord(digest, (dest / f"{name}.ckpt").stat().st_size), source="hub")
    return dest / f"{name}.ckpt"


def _checked_digest(base: HubBase, ckpt: Path, scratch: Path) -> str:
    """The checkpoint's SHA-256, once it matches the pinned one (or the Hub's, where none is pinned)."""
    digest = sha256_of(ckpt)
    expected = base.sha256 or hub_etag(scratch, base.path)
    if expected is None or len(expected) != 64:
        raise BaseError(
            f"{base.path}: the Hub sent no SHA-256 for it, so it cannot be checked and is not kept (a proxy that "
            "rewrites headers? Fetch it where the Hub answers directly)"
        )
    if digest != expected:
        pinned = "its pinned SHA-256" if base.sha256 else f"the SHA-256 the Hub names at {HUB_REVISION[:12]}"
        raise BaseError(
            f"{base.path} does not match {pinned} ({digest[:16]}... instead of {expected[:16]}...): it was "
            "damaged or replaced on the way, so it is not kept. Run the download again; if it repeats, fine-tune "
            "from an ONNX voice instead"
        )
    return digest


def resolve_base(spec: str, models: ModelStore) -> Base:
    """A downloaded base's name, one of the owner's voices, a known Piper voice, or a path (.onnx or .ckpt)."""
    downloaded = bases_root(models) / spec / f"{spec}.ckpt"
    if downloaded.is_file():
        problem = check_file(downloaded.parent, downloaded.name, read_manifest(downloaded.parent))
        if problem is not None:  # changed since its checked download: never unpickle a file nobody vouches for
            raise BaseError(f"base '{spec}': {problem}; fetch it again: plush voice base download {spec}")
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
