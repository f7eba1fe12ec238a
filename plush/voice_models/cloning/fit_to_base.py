"""Fit-to-base: train a warm start's fresh posterior parts on the base voice's own speech before any fine-tune.

Why (#27): an ONNX voice has no posterior encoder (`enc_q`) and no posterior duration flows (`dp.post_*`,
`dp.flows.1`); the warm start gives them random weights. Fine-tuning then trains the real generator through an
encoder that maps every recording to noise, and the voice turns to babble within a hundred steps. The base
voice can say any amount of speech, though, and when it speaks we know exactly what produced each sample: the
latent `z` its flow gave the decoder, and each phoneme's duration. So the posterior encoder is taught to read
that `z` back from the audio's spectrogram (the negative log-likelihood of the true `z` under `enc_q`'s
Gaussian), and the posterior duration flows the true durations (the duration predictor's own loss). Nothing
that the ONNX gave is touched, no decoder backward pass runs and no discriminator is needed, so a step costs
one synthesis and two small networks' backward passes (2.7 s at batch 4 on one quiet core here).

The result is the warm-start checkpoint again, with fitted parts and a note of how far they were fitted; the
fine-tune (`training`) starts from it as from any warm start. torch is imported only when this runs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.logs import get_logger
from plush.voice_models.cloning.warm_start import WARM_START_KEY, import_training, read_checkpoint

log = get_logger(__name__)

FITTED_PREFIXES = ("enc_q.", "dp.post_", "dp.flows.1.")
"""The generator parts this phase trains (names inside `model_g`): exactly what an ONNX voice lacks."""


@dataclass(frozen=True)
class FitPlan:
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 1e-3
    """Higher than the fine-tune's 2e-4: these parts start from random weights and have nothing to keep."""
    noise_scale: float = 0.667
    noise_scale_w: float = 0.8
    """Piper's inference defaults, so the fitted encoder reads the kind of latents the voice really speaks."""
    seed: int = 1234


@dataclass(frozen=True)
class FitProgress:
    step: int
    total: int
    z_nll: float
    """Mean negative log-likelihood per latent value of the true `z` under `enc_q` (lower: better read back)."""
    duration_nll: float
    seconds_per_step: float
    """Wall time from the start over the steps done."""


def load_generator(checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    """The checkpoint's VitsModel (eval mode, on CPU) and the checkpoint's contents."""
    import_training()
    from piper.train.vits.lightning import VitsModel

    data = read_checkpoint(checkpoint, mmap=False)
    hparams = dict(data["hyper_parameters"])
    hparams["mos_metric"] = None
    model = VitsModel(**{k: v for k, v in hparams.items() if k not in ("dataset", "self")})
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model, data


def phoneme_ids(onnx: Path, texts: Sequence[str]) -> list[list[int]]:
    """Each text as the base voice's phoneme ids (its espeak voice and id map, as its own synthesis does)."""
    from piper import PiperVoice

    voice = PiperVoice.load(onnx)
    out = []
    for text in texts:
        ids: list[int] = []
        for sentence in voice.phonemize(text):
            ids.extend(voice.phonemes_to_ids(sentence))
        if ids:
            out.append(ids)
    return out


def fit_to_base(
    checkpoint: Path,
    onnx: Path,
    texts: Sequence[str],
    out: Path,
    *,
    plan: FitPlan | None = None,
    on_progress: Callable[[FitProgress], None] | None = None,
) -> Path:
    """Fit the fresh parts of `checkpoint`'s generator to the base voice `onnx` speaking `texts`; write `out`."""
    torch = import_training()
    plan = plan or FitPlan()
    model, data = load_generator(checkpoint)
    fit_parts(model, onnx, texts, plan, on_progress)
    record = dict(data.get(WARM_START_KEY, {}))
    record["fitted_to_base"] = int(record.get("fitted_to_base", 0)) + plan.steps
    data["state_dict"] = model.state_dict()
    data[WARM_START_KEY] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(data, partial)
    partial.replace(out)
    log.info("fitted_to_base", checkpoint=str(out), steps=record["fitted_to_base"])
    return out


def fit_parts(
    model: Any,
    onnx: Path,
    texts: Sequence[str],
    plan: FitPlan,
    on_progress: Callable[[FitProgress], None] | None = None,
) -> None:
    """Train `model`'s (a loaded VitsModel) `FITTED_PREFIXES` parts in place, everything else frozen."""
    torch = import_training()
    generator = model.model_g
    trained = [p for n, p in generator.named_parameters() if n.startswith(FITTED_PREFIXES)]
    for name, parameter in generator.named_parameters():
        parameter.requires_grad_(name.startswith(FITTED_PREFIXES))
    optimizer = torch.optim.AdamW(trained, lr=plan.learning_rate, betas=(0.8, 0.99))
    utterances = phoneme_ids(onnx, texts)
    rng = random.Random(plan.seed)
    torch.manual_seed(plan.seed)
    started = time.perf_counter()
    for step in range(1, plan.steps + 1):
        batch = rng.sample(utterances, min(plan.batch_size, len(utterances)))
        z_nll, dur_nll = _fit_step(torch, model, batch, plan)
        optimizer.zero_grad()
        (z_nll + dur_nll).backward()
        torch.nn.utils.clip_grad_norm_(trained, 10.0)
        optimizer.step()
        if on_progress is not None:
            elapsed = time.perf_counter() - started
            on_progress(FitProgress(step, plan.steps, float(z_nll.detach()), float(dur_nll.detach()), elapsed / step))
    for parameter in generator.parameters():
        parameter.requires_grad_(True)
    model.eval()


def _fit_step(torch: Any, model: Any, batch: list[list[int]], plan: FitPlan) -> tuple[Any, Any]:
    """One batch: the base speaks it (no gradients), then the losses of reading its latents and durations back."""
    generator = model.model_g
    lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
    x = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
    for row, ids in enumerate(batch):
        x[row, : len(ids)] = torch.tensor(ids)
    generator.eval()
    with torch.no_grad():
        audio, attn, y_mask, (z, *_rest) = generator.infer(
            x, lengths, noise_scale=plan.noise_scale, noise_scale_w=plan.noise_scale_w
        )
        text, _m_p, _logs_p, x_mask = generator.enc_p(x, lengths)
        y_lengths = y_mask.sum([1, 2]).long()
        spec = spectrogram(model, audio.squeeze(1).clamp(-1, 1))
        frames = min(spec.size(2), z.size(2))
        spec, z, y_mask = spec[:, :, :frames], z[:, :, :frames], y_mask[:, :, :frames]
        y_lengths = y_lengths.clamp(max=frames)
        durations = attn.squeeze(1).sum(1).unsqueeze(1)  # [b, 1, text]
    generator.train()
    _z_q, m_q, logs_q, q_mask = generator.enc_q(spec, y_lengths)
    mask = y_mask * q_mask
    nll = logs_q + 0.5 * math.log(2 * math.pi) + 0.5 * ((z - m_q) * torch.exp(-logs_q)) ** 2
    z_nll = torch.sum(nll * mask) / (torch.sum(mask) * z.size(1))
    dur_nll = torch.sum(generator.dp(text, x_mask, durations)) / torch.sum(x_mask)
    return z_nll, dur_nll


def spectrogram(model: Any, audio: Any) -> Any:
    """The linear spectrogram Piper's trainer feeds the posterior encoder, of float audio [batch, samples]."""
    from piper.train.vits.mel_processing import spectrogram_torch

    h = model.hparams
    return spectrogram_torch(audio, h.filter_length, h.sample_rate, h.hop_length, h.win_length, center=False)  # type: ignore[no-untyped-call]
