"""Speaker similarity: how much a voice sounds like a person, as a number `check --deep` can compare.

Resemblyzer 0.1.4 (Apache-2.0, Resemble AI) turns speech into a 256-value speaker embedding with a GE2E encoder
whose weights ship inside its wheel (`pretrained.pt`, 17 MB), so it runs offline and never fetches anything.
Embeddings are unit length; a voice's similarity to a speaker is the cosine between its embedding and the
speaker's mean embedding over their clips. The stand-in owner's own held-out clips score 0.88 against their
training clips; joe, a different (male) voice, 0.44 (#27). torch and resemblyzer load only when this runs.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from plush.voice_models.cloning.warm_start import INSTALL_HINT, TrainingUnavailableError


class SpeakerEncoder:
    """Resemblyzer's voice encoder on CPU, loaded once."""

    def __init__(self) -> None:
        try:
            _webrtcvad_importable()
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise TrainingUnavailableError(f"{INSTALL_HINT} (resemblyzer is missing)") from exc
        self._preprocess = preprocess_wav
        self._encoder: Any = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The unit-length embedding of one clip (float samples in [-1, 1]); silence trimmed first."""
        wav = self._preprocess(np.asarray(audio, dtype=np.float32), source_sr=sample_rate)
        if wav.size < sample_rate // 10:  # all silence (a broken voice): nothing to embed
            wav = np.asarray(audio, dtype=np.float32)
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float64)


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """A speaker's embedding: the mean over their clips, back to unit length."""
    mean = np.mean(np.stack(embeddings), axis=0)
    return np.asarray(mean / (np.linalg.norm(mean) or 1.0), dtype=np.float64)


def similarity(embeddings: Sequence[np.ndarray], speaker: np.ndarray) -> float:
    """Mean cosine similarity of clips' embeddings to a speaker's mean embedding."""
    return float(np.mean([float(np.dot(e, speaker) / (np.linalg.norm(e) or 1.0)) for e in embeddings]))


def _webrtcvad_importable() -> None:
    """Make `import webrtcvad` work for Resemblyzer's silence trimming.

    Resemblyzer requires webrtcvad 2.0.10 (2017), whose 30-line Python wrapper imports `pkg_resources` only to read
    its own version, and setuptools 81 and later no longer ship `pkg_resources`: `import resemblyzer` then fails.
    Its compiled `_webrtcvad` extension is fine, so when the wrapper cannot load, the same wrapper is made here.
    """
    try:
        import webrtcvad  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        sys.modules.pop("webrtcvad", None)
        sys.modules["webrtcvad"] = _webrtcvad_wrapper()


def _webrtcvad_wrapper() -> types.ModuleType:
    """webrtcvad 2.0.10's `Vad` and `valid_rate_and_frame_length` over its compiled extension, as it writes them."""
    import _webrtcvad

    class Vad:
        def __init__(self, mode: int | None = None) -> None:
            self._vad = _webrtcvad.create()
            _webrtcvad.init(self._vad)
            if mode is not None:
                _webrtcvad.set_mode(self._vad, mode)

        def set_mode(self, mode: int) -> None:
            _webrtcvad.set_mode(self._vad, mode)

        def is_speech(self, buf: bytes, sample_rate: int, length: int | None = None) -> bool:
            length = length or len(buf) // 2
            if length * 2 > len(buf):
                raise IndexError(f"buffer has {len(buf) // 2} frames, but length argument was {length}")
            return bool(_webrtcvad.process(self._vad, sample_rate, buf, length))

    module = types.ModuleType("webrtcvad")
    for name, value in (("Vad", Vad), ("valid_rate_and_frame_length", _webrtcvad.valid_rate_and_frame_length)):
        setattr(module, name, value)
    setattr(module, "__version__", "2.0.10")  # noqa: B010 - a module's attribute, not an object's
    return module
