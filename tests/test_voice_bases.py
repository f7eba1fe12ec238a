"""Official Piper checkpoints as fine-tuning bases: fetched at a pinned commit and refused unless their SHA-256 holds.

A checkpoint is unpickled by the trainer, so a replaced or damaged file must never become a base. The real
`plush voice base download` runs against `fakes.hf_hub.FakeHub` (the real huggingface_hub client, a loopback
server speaking the Hub's protocol), whose `main` is the pinned commit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fakes.hf_hub import FakeHub
from test_model_download import plush

from plush.voice_models.cloning.bases import HUB_BASES, HUB_REPO, HUB_REVISION, BaseError, resolve_base
from plush.voice_models.model_store import ModelStore

DATASET = f"datasets/{HUB_REPO}"
CONFIG = b'{"audio": {"sample_rate": 22050}, "phoneme_id_map": {}}'


def serve_base(hub: FakeHub, name: str, checkpoint: bytes) -> None:
    base = HUB_BASES[name]
    hub.add_file(DATASET, base.path, checkpoint, lfs=True)
    hub.add_file(DATASET, f"{base.folder}/config.json", CONFIG)


def base_files(models_dir: Path, name: str) -> list[str]:
    folder = models_dir / "voice-bases" / name
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_base_is_fetched_at_the_pinned_commit_checked_and_checked_again_when_used(tmp_path: Path) -> None:
    checkpoint = b"pretend checkpoint " * 1000
    with FakeHub(commit=HUB_REVISION) as hub:
        serve_base(hub, "ryan-medium", checkpoint)
        done = plush("voice", "base", "download", "ryan-medium", endpoint=hub.url, models_dir=tmp_path)
        asked = [r.path for r in hub.requests if r.server == "hub" and r.filename]
    assert done.returncode == 0, done.stderr + done.stdout
    assert asked and all(f"/{DATASET}/resolve/{HUB_REVISION}/" in path for path in asked), asked
    ckpt = tmp_path / "voice-bases" / "ryan-medium" / "ryan-medium.ckpt"
    assert ckpt.read_bytes() == checkpoint
    models = ModelStore(tmp_path)
    assert resolve_base("ryan-medium", models).path == ckpt

    ckpt.write_bytes(checkpoint.replace(b"pretend", b"replace"))  # someone else's file in its place
    with pytest.raises(BaseError, match="does not match its checksum"):
        resolve_base("ryan-medium", models)


def test_a_checkpoint_that_is_not_the_pinned_file_is_refused_and_not_kept(tmp_path: Path) -> None:
    impostor = b"not lessac " * 1000
    assert hashlib.sha256(impostor).hexdigest() != HUB_BASES["lessac-medium"].sha256
    with FakeHub(commit=HUB_REVISION) as hub:
        serve_base(hub, "lessac-medium", impostor)  # the Hub's own ETag agrees with it: only the pin catches it
        refused = plush("voice", "base", "download", "lessac-medium", endpoint=hub.url, models_dir=tmp_path, wide=True)
    assert refused.returncode != 0
    assert "does not match its pinned SHA-256" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert base_files(tmp_path, "lessac-medium") == []


def test_a_checkpoint_damaged_on_the_way_is_refused_and_not_kept(tmp_path: Path) -> None:
    with FakeHub(commit=HUB_REVISION) as hub:
        serve_base(hub, "amy-medium", b"amy " * 4000)
        hub.tamper(DATASET, HUB_BASES["amy-medium"].path, b"yma " * 4000)
        refused = plush("voice", "base", "download", "amy-medium", endpoint=hub.url, models_dir=tmp_path, wide=True)
    assert refused.returncode != 0
    assert f"does not match the SHA-256 the Hub names at {HUB_REVISION[:12]}" in refused.stdout + refused.stderr
    assert base_files(tmp_path, "amy-medium") == []
