"""Shared, built-once pieces of the voice-training tests: the warm start from the real joe voice, and a tiny
dataset of "owner recordings" that the real joe voice reads aloud (a Piper dataset folder, LJSpeech form)."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

from plush.voice_models.cloning.warm_start import WarmStart, warm_start_checkpoint

_lock = threading.Lock()
_warm: dict[Path, WarmStart] = {}

OWNER_SENTENCES = ("A red ball.", "Count the stars!", "Sing a song.")
"""Short on purpose: a CPU training step costs in proportion to the clip's length."""


def joe_warm_start(joe: Path, folder: Path) -> WarmStart:
    """The warm-start checkpoint from the real joe voice, made once per test session (about 10 s)."""
    with _lock:
        if joe not in _warm:
            _warm[joe] = warm_start_checkpoint(joe, folder / "joe-warm.ckpt")
        return _warm[joe]


def owner_dataset(joe: Path, folder: Path) -> Path:
    """A Piper dataset folder: `metadata.csv` (`id|text`) and `wavs/<id>.wav` (22,050 Hz mono 16-bit)."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for number, text in enumerate(OWNER_SENTENCES):
        pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, SynthesisConfig(length_scale=1.1)))
        with wave.open(str(folder / "wavs" / f"owner{number:03d}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(voice.config.sample_rate)
            out.writeframes(pcm)
        rows.append(f"owner{number:03d}|{text}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
