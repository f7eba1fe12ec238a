"""Models at real dimensions with random weights, built locally for benchmarks: their compute cost is the real
models' (no real weights can be downloaded here). Built once into a cache folder and reused.

- Whisper base (d_model 512, 8 heads, 6+6 layers, int8), with the real tokenizer when ../shared has it.
- A Piper voice of the "medium" size: piper-tts's own VITS generator (`SynthesizerTrn` with the training
  defaults), randomly initialised and exported to ONNX the way `piper.train.export_onnx` does. Needs torch:
  `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tiny_models import build_whisper, write_piper_config  # noqa: E402

WHISPER_BASE = {"d_model": 512, "heads": 8, "layers": 6, "ffn": 2048, "n_mels": 80}
CACHE = REPO / "bench" / ".models"
SHARED_TOKENIZER = REPO.parent / "shared" / "models" / "whisper-tiny-tokenizer"


def whisper_base() -> Path:
    dest = CACHE / "whisper-base-random"
    if not (dest / "model.bin").is_file():
        tokenizer = SHARED_TOKENIZER if (SHARED_TOKENIZER / "tokenizer.json").is_file() else None
        build_whisper(dest, tokenizer, WHISPER_BASE)
    return dest


def piper_medium(length_scale: float = 1.5) -> Path:
    """A medium-size Piper voice (about 63 MB); `length_scale` 1.5 gives a realistic speaking rate."""
    onnx_path = CACHE / "piper-medium-random" / "medium.onnx"
    if onnx_path.is_file():
        return onnx_path
    try:
        import torch
        from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
        from piper.train.vits.models import SynthesizerTrn
    except ImportError as exc:
        raise SystemExit(f"the medium Piper voice needs torch: pip install -e '.[bench]' ({exc})") from exc

    torch.manual_seed(1234)
    n_vocab = 1 + max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids)
    model = SynthesizerTrn(  # VitsModel's defaults: the "medium" quality
        n_vocab=n_vocab,
        spec_channels=1024 // 2 + 1,
        segment_size=8192 // 256,
        inter_channels=192,
        hidden_channels=192,
        filter_channels=768,
        n_heads=2,
        n_layers=6,
        kernel_size=3,
        p_dropout=0.1,
        resblock="2",
        resblock_kernel_sizes=(3, 5, 7),
        resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
        upsample_rates=(8, 8, 4),
        upsample_initial_channel=256,
        upsample_kernel_sizes=(16, 16, 8),
    )
    model.eval()
    with torch.no_grad():
        model.dec.remove_weight_norm()

    def infer(text, text_lengths, scales, sid=None):  # type: ignore[no-untyped-def]
        return model.infer(
            text, text_lengths, noise_scale=scales[0], length_scale=scales[1], noise_scale_w=scales[2], sid=sid
        )[0].unsqueeze(1)

    model.forward = infer  # type: ignore[method-assign]
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(low=0, high=n_vocab, size=(1, 50), dtype=torch.long)
    torch.onnx.export(
        model=model,
        args=(ids, torch.LongTensor([50]), torch.FloatTensor([0.667, 1.0, 0.8]), None),
        f=str(onnx_path),
        opset_version=15,
        dynamo=False,
        input_names=["input", "input_lengths", "scales", "sid"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
                      "output": {0: "batch_size", 2: "time"}},
    )  # fmt: skip
    write_piper_config(onnx_path, espeak_voice="en-us", sample_rate=22050, length_scale=length_scale)
    return onnx_path
