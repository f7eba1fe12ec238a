"""Training from the warm start: a few steps of Piper's own trainer on CPU on owner recordings (the real joe voice
reading sentences), the base frozen first, then export, PiperVoice speaks it, `check` scores it beside its base;
a GPU job folder that carries everything; and the alignment Piper's wheel lacks, checked against a reference."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner
from voice_training_helpers import joe_warm_start, owner_dataset

from plush.logs import setup_logging
from plush.voice_models.cloning.piper_trainer_support import maximum_path_c
from plush.voice_models.cloning.training import TrainingError, inspect_dataset, require_accelerator
from plush.voice_train_cli import add_train_commands

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


def write_config(tmp_path: Path, models: Path, whisper: Path | None = None) -> Path:
    config = tmp_path / "plush.toml"
    config.write_text(f'[models]\ndir = "{models}"\n', encoding="utf-8")
    return config


def test_a_few_cpu_steps_from_the_warm_start_give_a_voice_piper_speaks_and_check_scores(
    real_joe_voice: Path, real_whisper_base: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from piper import PiperVoice

    models = tmp_path / "models"
    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    run_dir = models / "voice-training" / "mina"
    run_dir.mkdir(parents=True)
    (run_dir / "warm.ckpt").symlink_to(warm.checkpoint)  # the session's warm start, instead of making it again
    dataset = owner_dataset(real_joe_voice, tmp_path / "dataset")
    config = write_config(tmp_path, models)
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

    checked = runner.invoke(
        voice_cli(), ["check", "mina", "--whisper", str(real_whisper_base), "--config", str(config)]
    )
    assert checked.exit_code == 0, checked.output + repr(checked.exception)
    info = json.loads((onnx.parent / "voice.json").read_text(encoding="utf-8"))
    scores = info["check"]
    assert 0 < scores["voice"]["real_time_factor"] < 5
    assert scores["base"]["voice"] == real_joe_voice.stem, "scored beside its base voice"
    assert scores["base"]["cer"] < 0.25, "Whisper understands the real base voice"
    assert 0 <= scores["voice"]["cer"] <= 1.5
    assert "real-time factor" in checked.output


def test_without_a_gpu_train_refuses_and_points_to_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="--job DIR"):
        require_accelerator(allow_cpu=False)
    assert require_accelerator(allow_cpu=True) == "cpu"


def test_a_job_folder_carries_dataset_checkpoint_and_pinned_command(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    run_dir = models / "voice-training" / "mina"
    run_dir.mkdir(parents=True)
    (run_dir / "warm.ckpt").symlink_to(warm.checkpoint)
    dataset = owner_dataset(real_joe_voice, tmp_path / "dataset")
    job = tmp_path / "job"
    result = CliRunner().invoke(
        voice_cli(),
        ["train", "mina", "--dataset", str(dataset), "--base", str(real_joe_voice), "--language", "ko",
         "--job", str(job), "--config", str(write_config(tmp_path, models))],
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
