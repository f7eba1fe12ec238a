"""Training from the warm start: a few steps of Piper's own trainer on CPU on owner recordings (the real joe voice
reading sentences), the base frozen first, then export, PiperVoice speaks it, `check` scores it beside its base;
a GPU job folder that carries everything; and the alignment Piper's wheel lacks, checked against a reference."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner
from voice_training_helpers import joe_warm_start, owner_dataset

from plush.cli.voice_train import add_train_commands
from plush.logs import setup_logging
from plush.voice_models.cloning.export import ExportError, export_voice
from plush.voice_models.cloning.piper_trainer_support import maximum_path_c
from plush.voice_models.cloning.training import TrainingError, inspect_dataset, require_accelerator
from plush.voice_models.cloning.voice_store import VoiceStore
from plush.voice_models.cloning.warm_start import CheckpointError, WarmStart, read_checkpoint

pytestmark = pytest.mark.real_weights


@pytest.fixture(autouse=True)
def logging_back_on_stderr() -> Iterator[None]:
    """The commands run in-process set up logging on the test runner's captured stderr; rebind it afterwards."""
    yield
    setup_logging()


def voice_cli() -> typer.Typer:
    app = typer.Typer()
    add_train_commands(app)
    return app


def reuse_warm_start(models: Path, name: str, warm: WarmStart) -> None:
    """Give voice `name`'s run the session's warm start from joe, instead of making it again (about 10 s)."""
    run_dir = models / "voice-training" / name
    run_dir.mkdir(parents=True)
    (run_dir / "warm.ckpt").symlink_to(warm.checkpoint)


def mina_run(joe: Path, factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Path, WarmStart, Path]:
    """A models folder whose run `mina` starts from joe's warm start, and the owner's dataset: (models, warm,
    dataset)."""
    models = tmp_path / "models"
    warm = joe_warm_start(joe, factory.mktemp("warm"))
    reuse_warm_start(models, "mina", warm)
    return models, warm, owner_dataset(joe, tmp_path / "dataset")


def write_config(tmp_path: Path, models: Path, whisper: Path | None = None) -> Path:
    config = tmp_path / "plush.toml"
    stt = f'[stt]\nmodel = "{whisper}"\n' if whisper is not None else ""
    config.write_text(f'[models]\ndir = "{models}"\n{stt}', encoding="utf-8")
    return config


def test_a_few_cpu_steps_from_the_warm_start_give_a_voice_piper_speaks_and_check_scores(
    real_joe_voice: Path, real_whisper_base: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from piper import PiperVoice

    models, warm, dataset = mina_run(real_joe_voice, tmp_path_factory, tmp_path)
    config = write_config(tmp_path, models, whisper=real_whisper_base)
    runner = CliRunner()

    result = runner.invoke(
        voice_cli(),
        ["train", "mina", "--dataset", str(dataset), "--base", str(real_joe_voice), "--cpu", "--steps", "2",
         "--frozen-steps", "1", "--batch-size", "1", "--segment-size", "2048", "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trained 2 steps" in result.output
    step_s = float(re.search(r"\(([\d.]+) s per step\)", result.output).group(1))  # type: ignore[union-attr]
    assert step_s > 0
    onnx = models / "voices" / "mina" / "mina.onnx"
    voice = PiperVoice.load(onnx)
    audio = b"".join(c.audio_int16_bytes for c in voice.synthesize("Hello, I am your plush."))
    assert len(audio) > 2 * 22050 * 0.5, "half a second of speech or more"
    assert voice.config.espeak_voice == "en-us"

    # Heard by the config's [stt] model, a path (before: "stt model 'whisper-base' is not downloaded")
    checked = runner.invoke(voice_cli(), ["check", "mina", "--config", str(config)])
    assert checked.exit_code == 0, checked.output + repr(checked.exception)
    info = json.loads((onnx.parent / "voice.json").read_text(encoding="utf-8"))
    scores = info["check"]
    assert 0 < scores["voice"]["real_time_factor"] < 5
    assert scores["base"]["voice"] == real_joe_voice.stem, "scored beside its base voice"
    assert scores["base"]["cer"] < 0.25, "Whisper understands the real base voice"
    assert 0 <= scores["voice"]["cer"] <= 1.5
    assert "real-time factor" in checked.output
    assert "speaks with mina" in runner.invoke(voice_cli(), ["use", "mina", "--config", str(config)]).output

    # A fine-tune that wrecks the voice (every part learning at once, at a rate 50 times Piper's): `use` checks it
    # itself, with the config's Whisper, and refuses it. Before: taken without a word.
    reuse_warm_start(models, "babble", warm)
    result = runner.invoke(
        voice_cli(),
        ["train", "babble", "--dataset", str(dataset), "--base", str(real_joe_voice), "--cpu", "--steps", "2",
         "--frozen-steps", "0", "--learning-rate", "0.01", "--batch-size", "1", "--segment-size", "2048",
         "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    refused = runner.invoke(voice_cli(), ["use", "babble", "--config", str(config)])
    assert refused.exit_code != 0, refused.output
    assert "babble is not used" in str(refused.exception) and "its base en_US-joe-medium scores" in str(
        refused.exception
    )
    assert VoiceStore.in_models(models).active() == "mina", "the server keeps the voice it had"


def test_without_a_gpu_train_refuses_and_points_to_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="--job DIR"):
        require_accelerator(allow_cpu=False)
    assert require_accelerator(allow_cpu=True) == "cpu"


@pytest.mark.timeout(900)
def test_a_job_folder_carries_dataset_checkpoint_and_pinned_command(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models, warm, dataset = mina_run(real_joe_voice, tmp_path_factory, tmp_path)
    job = tmp_path / "job"
    result = CliRunner().invoke(
        voice_cli(),
        ["train", "mina", "--dataset", str(dataset), "--base", str(real_joe_voice), "--language", "ko",
         "--segment-size", "2048", "--job", str(job), "--config", str(write_config(tmp_path, models))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in (job / "dataset" / "wavs").iterdir()) == [f"owner00{i}.wav" for i in range(3)]
    assert (job / "base.ckpt").stat().st_size == warm.checkpoint.stat().st_size
    script = (job / "run.sh").read_text(encoding="utf-8")
    assert "piper-tts[train]==1.8.0" in script and "torch==2.13.0" in script
    assert "-m piper.train fit" in script and "--data.espeak_voice ko" in script
    assert "--trainer.callbacks+=piper_trainer_support.FreezeWarmStartedParts" in script
    assert (job / "piper_trainer_support.py").is_file() and (job / "README.md").is_file()
    phonemes = json.loads((job / "phonemes.json").read_text(encoding="utf-8"))
    assert phonemes["a"] == json.loads(Path(f"{real_joe_voice}.json").read_text())["phoneme_id_map"]["a"]

    missing = CliRunner().invoke(
        voice_cli(), ["import-checkpoint", str(job), "--name", "mina", "--config", str(tmp_path / "plush.toml")]
    )
    assert missing.exit_code != 0 and "no trained checkpoint yet" in str(missing.exception)

    # The Korean job's first step on this CPU: Piper's own trainer, phonemizing with espeak-ng ko.
    env = {**os.environ, "PYTHON": sys.executable, "ACCELERATOR": "cpu", "MAX_STEPS": "1", "REPORT_EVERY": "1"}
    done = subprocess.run(
        ["bash", str(job / "run.sh")], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step 1/1" in done.stdout and list(job.glob("runs/**/last.ckpt"))


class RunsCode:
    """What a tampered checkpoint could carry: unpickling it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "tampered.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "extra": RunsCode(marker)}, checkpoint)
    with pytest.raises(CheckpointError, match="Plush never runs code from a checkpoint"):
        read_checkpoint(checkpoint)
    result = CliRunner().invoke(
        voice_cli(),
        ["import-checkpoint", str(checkpoint), "--name", "x", "--config", str(write_config(tmp_path, tmp_path))],
    )
    assert result.exit_code != 0 and "is refused" in str(result.exception)
    assert not marker.exists(), "nothing in it ran"  # before: torch.load(weights_only=False) ran it


def test_a_diverged_run_is_refused_at_export_with_what_to_do(tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    weights = {"model_g.dec.conv_pre.weight": torch.tensor([1.0, float("nan")]), "model_d.x": torch.zeros(2)}
    torch.save({"state_dict": weights, "hyper_parameters": {}}, checkpoint)
    with pytest.raises(ExportError, match=r"1 of its generator's weights are not numbers.*lower --learning-rate"):
        export_voice(checkpoint, tmp_path / "v.onnx", voice_config={})  # before: a page of tensor([nan, ...])


@pytest.mark.timeout(900)
def test_a_job_says_its_plan_trains_the_unfrozen_part_it_reports_and_comes_back_with_its_steps(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models, warm, dataset = mina_run(real_joe_voice, tmp_path_factory, tmp_path)
    job = tmp_path / "job"
    config = write_config(tmp_path, models)
    result = CliRunner().invoke(
        voice_cli(),
        ["train", "mina", "--dataset", str(dataset), "--base", str(real_joe_voice), "--steps", "20",
         "--segment-size", "2048", "--job", str(job), "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "the first 2 with the base frozen" in result.output, "a tenth of the steps asked for"
    assert "is under the 10 minutes `plush voice prepare` asks for" in result.output

    def run(**env: str) -> str:
        done = subprocess.run(
            ["bash", str(job / "run.sh")], env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def plan(**env: str) -> str:  # PYTHON=true: the plan line only, no trainer started
        return run(PYTHON="true", **env).splitlines()[0]

    assert plan() == "training mina: 20 steps of batch 3 on gpu; the first 2 with the base frozen, then 18 with every part learning"  # fmt: skip  # noqa: E501
    # before: 600 frozen steps whatever MAX_STEPS said, and a GPU's batch on a CPU
    assert plan(MAX_STEPS="300", ACCELERATOR="cpu") == (
        "training mina: 300 steps of batch 2 on cpu; the first 30 with the base frozen, then 270 with every part learning"  # noqa: E501
    )

    trained = run(PYTHON=sys.executable, ACCELERATOR="cpu", MAX_STEPS="2", FROZEN_STEPS="1", REPORT_EVERY="1")
    assert "warm start: step 1, the whole generator learns now" in trained
    assert "step 2/2 (every part learning)" in trained and "Epoch 0/-2" not in trained
    [checkpoint] = job.glob("runs/**/last.ckpt")
    before = read_checkpoint(job / "base.ckpt")["state_dict"]
    after = read_checkpoint(checkpoint)["state_dict"]
    assert any(not torch.equal(before[k], after[k]) for k in warm.from_onnx), "the base's own weights learned"

    def import_job() -> Any:
        return CliRunner().invoke(
            voice_cli(), ["import-checkpoint", str(job), "--name", "mina", "--config", str(config)]
        )

    imported = import_job()
    assert imported.exit_code == 0, imported.output + repr(imported.exception)
    info = json.loads((models / "voices" / "mina" / "voice.json").read_text(encoding="utf-8"))
    assert info["steps"] == 2  # before: "-" in `plush voice list`
    listing = CliRunner().invoke(voice_cli(), ["list", "--config", str(config)])
    assert re.search(r"mina .* 2 ", listing.output), listing.output

    with checkpoint.open("r+b") as file:  # a checkpoint changed after the job finished
        file.seek(-1, 2)
        last = file.read(1)
        file.seek(-1, 2)
        file.write(bytes([last[0] ^ 1]))
    refused = import_job()
    assert refused.exit_code != 0 and "does not match the job's checkpoints.sha256" in str(refused.exception)


def test_a_dataset_that_is_not_in_piper_form_is_refused_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("clip1 has no separator\n", encoding="utf-8")
    with pytest.raises(TrainingError, match=re.escape("line 1 is not 'id|text'")):
        inspect_dataset(tmp_path)
    with pytest.raises(TrainingError, match=r"no metadata\.csv"):
        inspect_dataset(tmp_path / "nowhere")


def test_the_packaged_alignment_matches_its_reference_in_vits_layout() -> None:
    from monotonic_alignment_search import maximum_path_numpy

    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 30, 8)).astype(np.float32)  # VITS: [batch, frames, text]
    mask = np.ones_like(values)
    mask[1, 25:, :] = 0
    mask[1, :, 6:] = 0
    paths = np.zeros(values.shape, dtype=np.int32)
    maximum_path_c(paths, values, mask[:, :, 0].sum(1).astype(np.int32), mask[:, 0, :].sum(1).astype(np.int32))
    glow = maximum_path_numpy(torch.from_numpy(values.transpose(0, 2, 1).copy()),
                              torch.from_numpy(mask.transpose(0, 2, 1).copy()))  # fmt: skip
    assert np.array_equal(paths, glow.numpy().transpose(0, 2, 1).astype(np.int32))
    assert (paths[1, :25].sum(1) == 1).all() and (paths[1, :, :6].sum(0) >= 1).all()
