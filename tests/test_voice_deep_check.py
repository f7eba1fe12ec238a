"""`plush voice check --deep` and fit-to-base (#27): a warm start whose posterior encoder never learned to read
speech is told apart from a voice that speaks, on CPU, and `use` refuses it; fitting it to the base's own speech
trains only the parts the ONNX lacked. On the real joe voice, Whisper base and an espeak-ng stand-in owner."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner
from voice_training_helpers import joe_warm_start

from plush.cli.voice_train import add_train_commands
from plush.logs import setup_logging
from plush.voice_models.cloning.deep_check import unfit_reasons
from plush.voice_models.cloning.training import write_run_file
from plush.voice_models.cloning.voice_store import VoiceStore

OWNER = ("Can you hop like a bunny?", "My teddy likes warm milk.", "The moon is round tonight.")
HELD_OUT = ("Let's read one more story.", "Where did the puppy go?")


@pytest.fixture(autouse=True)
def logging_back_on_stderr() -> Iterator[None]:
    """The commands run in-process set up logging on the test runner's captured stderr; rebind it afterwards."""
    yield
    setup_logging()


def stand_in_owner(folder: Path) -> Path:
    """A dataset folder read by espeak-ng's en-us+f3 (a high female voice, far from joe), with a held_out.csv."""
    (folder / "wavs").mkdir(parents=True)
    for name, texts in (("metadata.csv", OWNER), ("held_out.csv", HELD_OUT)):
        rows: list[str] = []
        for text in texts:
            clip = f"{name[0]}{len(rows)}"
            subprocess.run(
                ["espeak-ng", "-v", "en-us+f3", "-w", str(folder / "wavs" / f"{clip}.wav"), text], check=True
            )
            rows.append(f"{clip}|{text}\n")
        (folder / name).write_text("".join(rows), encoding="utf-8")
    return folder


def joe_as_a_trained_voice(models: Path, joe: Path, checkpoint: Path, dataset: Path) -> VoiceStore:
    """Voice `mina` in the store: joe's own ONNX, "trained" as `checkpoint` from base joe on `dataset`."""
    store = VoiceStore.in_models(models)
    onnx = store.onnx_path("mina")
    onnx.parent.mkdir(parents=True)
    shutil.copy(joe, onnx)
    shutil.copy(f"{joe}.json", f"{onnx}.json")
    store.update_info("mina", checkpoint=str(checkpoint), base=str(joe), exported="2026-12-04 00:00:00")
    write_run_file(models / "voice-training" / "mina", dataset=str(dataset))
    return store


@pytest.mark.real_weights
@pytest.mark.timeout(600)
def test_a_warm_start_never_fitted_fails_the_deep_check_and_use_refuses_it_while_joe_itself_passes(
    real_joe_voice: Path, real_whisper_base: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    dataset = stand_in_owner(tmp_path / "owner")
    models = tmp_path / "models"
    store = joe_as_a_trained_voice(models, real_joe_voice, warm.checkpoint, dataset)
    config = tmp_path / "plush.toml"
    config.write_text(f'[models]\ndir = "{models}"\n[stt]\nmodel = "{real_whisper_base}"\n', encoding="utf-8")
    app = typer.Typer()
    add_train_commands(app)

    checked = CliRunner().invoke(app, ["check", "mina", "--deep", "--config", str(config)])
    assert checked.exit_code == 0, checked.output + repr(checked.exception)
    assert "your clips, reconstructed" in checked.output
    deep = json.loads((store.onnx_path("mina").parent / "voice.json").read_text(encoding="utf-8"))["check"]["deep"]
    assert deep["owner"]["cer"] < 0.3, "Whisper follows the owner's own held-out clips"
    assert deep["reconstruction_cer"] > 0.7, "through a random posterior encoder they come out as babble"
    assert deep["voice"]["cer"] < 0.3 and abs(deep["voice"]["cer"] - deep["base"]["cer"]) < 0.05, "joe speaks"
    assert deep["voice"]["to_base"] > 0.85, "joe sounds like joe"
    assert deep["owner"]["to_owner"] > deep["voice"]["to_owner"] + 0.1, "the owner sounds more like the owner"

    refused = CliRunner().invoke(app, ["use", "mina", "--config", str(config)])
    assert refused.exit_code != 0, refused.output
    assert "reconstructs your held-out recordings" in str(refused.exception)
    assert store.active() is None, "the server keeps its voice"

    joe_itself = {**deep, "reconstruction_cer": None}  # the same voice with no checkpoint to reconstruct through
    assert unfit_reasons(joe_itself, 0.2) == [], "joe's own synthesis passes everything else"


def deep_result(*, recon: float | None, cer: float, to_owner: float) -> dict[str, object]:
    """A stored deep check: the owner's clips, the voice, and its base joe (CER 0.02, 0.44 like the owner)."""

    def scores(name: str, cer: float, to_owner: float) -> dict[str, object]:
        return {"voice": name, "cer": cer, "to_owner": to_owner, "to_base": None}

    return {
        "clips": 10,
        "owner": scores("owner", 0.03, 0.88),
        "reconstruction_cer": recon,
        "voice": scores("mina", cer, to_owner),
        "base": scores("en_US-joe-medium", 0.02, 0.44),
    }


def test_the_deep_check_refuses_babble_a_broken_checkpoint_and_a_voice_moving_away_from_its_owner() -> None:
    assert unfit_reasons(deep_result(recon=0.05, cer=0.04, to_owner=0.61), 0.2) == [], "a good fine-tune passes"
    assert unfit_reasons(deep_result(recon=None, cer=0.02, to_owner=0.44), 0.2) == [], "the base itself passes"
    (babble,) = unfit_reasons(deep_result(recon=0.1, cer=0.91, to_owner=0.53), 0.2)
    assert "CER of 0.91 against its base's 0.02" in babble, "more like the owner does not excuse babble"
    (broken,) = unfit_reasons(deep_result(recon=0.95, cer=0.02, to_owner=0.44), 0.2)
    assert "reconstructs your held-out recordings at a CER of 0.95" in broken
    (away,) = unfit_reasons(deep_result(recon=0.05, cer=0.02, to_owner=0.30), 0.2)
    assert "less like you than its base" in away


@pytest.mark.real_weights
@pytest.mark.timeout(300)
def test_fitting_to_the_base_trains_only_what_the_onnx_lacked_and_reads_its_latents_better(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    import torch

    from plush.voice_models.cloning.fit_to_base import FITTED_PREFIXES, FitPlan, fit_to_base, load_generator
    from plush.voice_models.cloning.warm_start import WARM_START_KEY, read_checkpoint

    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    seen: list[float] = []
    fitted = fit_to_base(
        warm.checkpoint,
        real_joe_voice,
        OWNER + HELD_OUT,
        tmp_path / "fitted.ckpt",
        plan=FitPlan(steps=6, batch_size=2),
        on_progress=lambda p: seen.append(p.z_nll),
    )
    before, after = load_generator(warm.checkpoint)[0].state_dict(), load_generator(fitted)[0].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the fresh parts learned"
    assert all(k.removeprefix("model_g.").startswith(FITTED_PREFIXES) for k in changed), sorted(changed)[:3]
    assert min(seen[-2:]) < seen[0], f"the true latents read back better: {seen}"
    assert read_checkpoint(fitted)[WARM_START_KEY]["fitted_to_base"] == 6
