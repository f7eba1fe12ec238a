"""`check --deep`: does a trained voice still speak words, and does it sound more like its owner than its base?

The plain check hears three test sentences. That missed the failure #27 found: a fine-tune from an ONNX warm
start whose posterior encoder never learned to read speech. Its synthesis can still pass for a few steps, but
training goes through that encoder, so the voice turns to babble soon after. Three measures tell this apart on
CPU in a few minutes (3-8 on 2 shared cores for 10 sentences):

- **reconstruction**: the owner's held-out clips through the checkpoint's posterior encoder and decoder (what
  training optimises), heard by Whisper as CER (the owner's clips heard directly say what Whisper makes of them);
- **synthesis**: the held-out sentences spoken by the voice and by its base, heard as CER;
- **similarity**: Resemblyzer's speaker similarity (`speaker_similarity`) of both to the owner's mean embedding
  over their training clips, and to the base's own.

`unfit_reasons` turns a report into the reasons `plush voice use` refuses a voice. torch loads only when this runs.
"""

from __future__ import annotations

import csv
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.logs import get_logger
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.speech_scoring import character_error_rate
from plush.voice_models.stt import Transcriber

log = get_logger(__name__)

HELD_OUT = "held_out.csv"
"""A dataset's sentences kept out of training (LJSpeech form, `id|text`, clips in its `wavs/`)."""
MAX_RECONSTRUCTION_CER = 0.9
"""The reconstruction CER above which the checkpoint's posterior encoder reads nothing of the owner's speech. On
the stand-in owner (#27, bench/README.md): checkpoints from the plain warm start 1.00-1.05, even when their
synthesis was still clear; from a fitted one 0.69-0.81 after 10-25 CPU steps, the clear ones included. Stricter
bounds need a longer-trained voice to measure."""
MAX_SIMILARITY_LOSS = 0.05
"""How much less like the owner than its base a voice may sound: training that moves away from the owner failed."""


@dataclass(frozen=True)
class Clip:
    wav: Path
    text: str


@dataclass(frozen=True)
class SpeakerScores:
    voice: str
    cer: float
    """Mean CER over the held-out sentences as Whisper heard them."""
    to_owner: float
    """Mean cosine similarity to the owner's mean embedding."""
    to_base: float | None
    """Mean cosine similarity to the base's mean embedding (over its held-out sentences)."""


@dataclass(frozen=True)
class DeepReport:
    clips: int
    owner: SpeakerScores
    """The owner's held-out clips themselves: the ceiling of similarity and the floor of CER."""
    reconstruction_cer: float | None
    """The owner's held-out clips through posterior encoder -> decoder (None: no checkpoint at hand)."""
    voice: SpeakerScores
    base: SpeakerScores | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_clips(metadata: Path, audio_dir: Path | None = None, limit: int | None = None) -> list[Clip]:
    """The clips an LJSpeech-form file lists (`id|text`; WAVs in `audio_dir`, default its folder's `wavs/`)."""
    folder = audio_dir or (metadata.parent / "wavs" if (metadata.parent / "wavs").is_dir() else metadata.parent)
    clips = []
    with metadata.open(encoding="utf-8") as rows:
        for row in csv.reader(rows, delimiter="|", quoting=csv.QUOTE_NONE):
            if len(row) >= 2 and row[1].strip():
                name = row[0] if row[0].endswith(".wav") else f"{row[0]}.wav"
                clips.append(Clip(folder / name, row[-1].strip()))
    return clips[:limit] if limit else clips


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV as float samples and its rate."""
    with wave.open(str(path), "rb") as audio:
        rate, pcm = audio.getframerate(), audio.readframes(audio.getnframes())
    return pcm16_to_float(pcm), rate


def heard_cer(transcriber: Transcriber, audio: np.ndarray, rate: int, text: str, language: str) -> float:
    """Whisper's CER on float audio at `rate` against `text`."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    samples = pcm16_to_float(resample_pcm16(pcm, rate, WHISPER_RATE))
    result = transcriber.transcribe(samples, language=language) if samples.size else None
    return character_error_rate(text, result.text if result is not None else "")


def reconstruct(model: Any, audio: np.ndarray) -> np.ndarray:
    """A clip through the checkpoint's posterior encoder (its mean) and decoder: what training asks it to redo."""
    import torch

    from plush.voice_models.cloning.fit_to_base import spectrogram

    generator = model.model_g
    with torch.no_grad():
        y = torch.from_numpy(np.asarray(audio, dtype=np.float32)).unsqueeze(0)
        spec = spectrogram(model, y)
        lengths = torch.tensor([spec.size(2)], dtype=torch.long)
        _z, m_q, _logs_q, mask = generator.enc_q(spec, lengths)
        out = generator.dec(m_q * mask)
    return np.asarray(out.squeeze().numpy(), dtype=np.float32)


def reconstruction_cer(model: Any, clips: Sequence[Clip], transcriber: Transcriber, language: str) -> float:
    """Mean CER of the clips reconstructed by `model` (a loaded VitsModel), as Whisper hears them."""
    rate = int(model.hparams.sample_rate)
    scores = []
    for clip in clips:
        audio, clip_rate = read_wav(clip.wav)
        if clip_rate != rate:
            audio = pcm16_to_float(resample_pcm16((audio * 32767).astype("<i2").tobytes(), clip_rate, rate))
        scores.append(heard_cer(transcriber, reconstruct(model, audio), rate, clip.text, language))
    return float(np.mean(scores))


def deep_check(
    onnx: Path,
    *,
    checkpoint: Path | None,
    held_out: Sequence[Clip],
    owner_clips: Sequence[Clip],
    transcriber: Transcriber,
    language: str,
    base: Path | None = None,
) -> DeepReport:
    """Reconstruction, synthesis and similarity of the voice `onnx` (trained as `checkpoint`) beside its base."""
    from plush.voice_models.cloning.speaker_similarity import SpeakerEncoder, mean_embedding, similarity

    encoder = SpeakerEncoder()
    owner_mean = mean_embedding([encoder.embed(*read_wav(c.wav)) for c in owner_clips])
    held_audio = [read_wav(c.wav) for c in held_out]
    texts = [c.text for c in held_out]
    owner_cer = float(
        np.mean([heard_cer(transcriber, a, r, t, language) for (a, r), t in zip(held_audio, texts, strict=True)])
    )
    owner_emb = [encoder.embed(a, r) for a, r in held_audio]

    def scores_of(voice: Path, base_mean: np.ndarray | None, *, is_base: bool = False) -> tuple[SpeakerScores, Any]:
        """A voice speaking the held-out sentences: its scores (beside the base's mean embedding, or its own
        when it is the base), and its mean embedding."""
        audio = _speak(voice, texts)
        embeddings = [encoder.embed(a, r) for a, r in audio]
        own_mean = mean_embedding(embeddings)
        scores = _scores(
            voice.stem, audio=audio, embeddings=embeddings, texts=texts, owner_mean=owner_mean,
            base_mean=own_mean if is_base else base_mean, transcriber=transcriber, language=language,
        )  # fmt: skip
        return scores, own_mean

    base_scores = base_mean = None
    if base is not None and base.is_file():
        base_scores, base_mean = scores_of(base, None, is_base=True)
    voice, _ = scores_of(onnx, base_mean)
    owner = SpeakerScores("owner", owner_cer, similarity(owner_emb, owner_mean), _similarity(owner_emb, base_mean))
    recon = None
    if checkpoint is not None and checkpoint.is_file():
        from plush.voice_models.cloning.fit_to_base import load_generator

        recon = reconstruction_cer(load_generator(checkpoint)[0], held_out, transcriber, language)
    report = DeepReport(len(held_out), owner, recon, voice, base_scores)
    log.info("voice_deep_checked", voice=onnx.stem, reconstruction_cer=recon, cer=voice.cer, to_owner=voice.to_owner)
    return report


def unfit_reasons(deep: dict[str, Any], max_cer_above_base: float) -> list[str]:
    """Why a deep-checked voice must not be used (a `DeepReport.as_dict()`): empty when it passes."""
    reasons = []
    owner, voice, base = deep["owner"], deep["voice"], deep.get("base")
    recon = deep.get("reconstruction_cer")
    if recon is not None and recon > MAX_RECONSTRUCTION_CER:
        reasons.append(
            f"its checkpoint reconstructs your held-out recordings at a CER of {recon:.2f} (your clips themselves "
            f"{owner['cer']:.2f}): the part that reads speech never learned to, and training through it makes babble"
        )
    if base is not None and voice["cer"] > base["cer"] + max_cer_above_base:
        reasons.append(
            f"Whisper heard the held-out sentences in it at a CER of {voice['cer']:.2f} against its base's "
            f"{base['cer']:.2f}: it mumbles or babbles"
        )
    if base is not None and voice["to_owner"] < base["to_owner"] - MAX_SIMILARITY_LOSS:
        reasons.append(
            f"it sounds less like you than its base does (similarity {voice['to_owner']:.2f} against "
            f"{base['to_owner']:.2f})"
        )
    return reasons


def _speak(onnx: Path, texts: Sequence[str]) -> list[tuple[np.ndarray, int]]:
    from plush.voice_models.tts import Synthesizer

    voice = Synthesizer(onnx)
    return [(pcm16_to_float(voice.synthesize(text)), voice.sample_rate) for text in texts]


def _scores(
    name: str,
    *,
    audio: Sequence[tuple[np.ndarray, int]],
    embeddings: Sequence[np.ndarray],
    texts: Sequence[str],
    owner_mean: np.ndarray,
    base_mean: np.ndarray | None,
    transcriber: Transcriber,
    language: str,
) -> SpeakerScores:
    from plush.voice_models.cloning.speaker_similarity import similarity

    cer = float(np.mean([heard_cer(transcriber, a, r, t, language) for (a, r), t in zip(audio, texts, strict=True)]))
    return SpeakerScores(name, cer, similarity(embeddings, owner_mean), _similarity(embeddings, base_mean))


def _similarity(embeddings: Sequence[np.ndarray], speaker: np.ndarray | None) -> float | None:
    from plush.voice_models.cloning.speaker_similarity import similarity

    return None if speaker is None else similarity(embeddings, speaker)
