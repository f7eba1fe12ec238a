"""The warm start: the real joe voice (published only as ONNX) becomes a checkpoint of Piper's own trainer that,
re-exported with Piper's own exporter, speaks exactly as the original ONNX does (same phonemes, no noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import build_piper_voice
from voice_training_helpers import joe_warm_start

from plush.voice_models.cloning.export import export_voice
from plush.voice_models.cloning.onnx_graph import OnnxVoiceError, read_onnx_voice
from plush.voice_models.cloning.warm_start import TRAINING_ONLY, voice_config

pytestmark = pytest.mark.real_weights


def speak(onnx: Path, ids: list[int]) -> np.ndarray[Any, Any]:
    """The voice's audio for these phoneme ids with noise_scale = noise_w = 0 (deterministic)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    inputs = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }
    return np.asarray(session.run(None, inputs)[0]).squeeze()


def test_warm_start_from_the_real_joe_onnx_reexports_to_the_same_audio(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from piper import PiperVoice

    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    out = tmp_path_factory.mktemp("reexported") / "joe-again.onnx"
    export_voice(warm.checkpoint, out, voice_config=voice_config(real_joe_voice))

    joe = PiperVoice.load(real_joe_voice)
    sentences = ["Hello there, I am your plush. How are you today?", "Seven small ducks swam home."]
    for sentence in sentences:
        ids = joe.phonemes_to_ids(joe.phonemize(sentence)[0])
        original, again = speak(real_joe_voice, ids), speak(out, ids)
        assert original.shape == again.shape
        assert np.abs(original).max() > 0.1, "the real voice says something"
        assert np.abs(original - again).max() < 1e-3
    reloaded = PiperVoice.load(out)  # the .onnx.json written beside it makes a voice Piper loads and speaks
    assert sum(len(c.audio_int16_bytes) for c in reloaded.synthesize("Good night.")) > 10_000


def test_warm_start_takes_every_inference_weight_and_starts_only_training_parts_fresh(
    real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    warm = joe_warm_start(real_joe_voice, tmp_path_factory.mktemp("warm"))
    assert "model_g.enc_p.emb.weight" in warm.from_onnx  # the embedding the exporter renamed `sid`
    assert "model_g.flow.flows.0.enc.in_layers.0.weight_v" in warm.from_onnx  # an anonymous folded weight
    assert "model_g.dp.flows.0.logs" in warm.from_onnx  # folded into exp(-logs)
    fresh_generator = [k for k in warm.fresh if k.startswith("model_g.")]
    assert fresh_generator and all(k.startswith(TRAINING_ONLY) for k in fresh_generator)
    assert any(k.startswith("model_d.") for k in warm.fresh), "the discriminators start fresh"
    assert warm.hyperparameters["upsample_rates"] == (8, 8, 4)  # read from the graph's ConvTranspose strides


def test_an_onnx_that_is_not_a_piper_voice_is_refused_with_a_reason(tmp_path: Path) -> None:
    tiny = build_piper_voice(tmp_path)  # the right inputs and outputs, but a tone generator, not VITS
    with pytest.raises(OnnxVoiceError, match="not a Piper voice"):
        read_onnx_voice(tiny)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx at all")
    with pytest.raises(OnnxVoiceError, match="not a readable ONNX file"):
        read_onnx_voice(broken)
