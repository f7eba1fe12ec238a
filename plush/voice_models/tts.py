"""Text to speech with Piper: load a voice once, turn a piece of text into 16-bit PCM.

`synthesize` is blocking (ONNX Runtime), so the server runs it in a worker thread, one sentence at a time, while
the LLM keeps generating the next one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from plush.errors import PlushError


class TtsError(PlushError):
    """The voice could not be loaded or failed on a piece of text."""


def voice_language(voice_path: Path) -> str:
    """The espeak-ng voice a Piper voice speaks (`en-us`, `ko`), from its `.onnx.json`, without loading it; "" when
    the file cannot be read."""
    import json

    try:
        config = json.loads(Path(str(voice_path) + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("espeak", {}).get("voice", ""))


class Voice(Protocol):
    """What speaks a piece of a reply: a Piper voice, or the built-in espeak-ng fallback (espeak_voice.py)."""

    sample_rate: int
    language: str
    """The espeak-ng voice it phonemizes with (`en-us`, `ko`): which language it speaks."""
    label: str
    """How the turn log, `plush models list` and the dashboard name it."""

    def synthesize(self, text: str) -> bytes: ...


class Synthesizer:
    """A loaded Piper voice."""

    def __init__(self, voice_path: Path, *, length_scale: float | None = None) -> None:
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise TtsError("text to speech needs piper-tts: pip install 'plush[server]'") from exc
        config_path = Path(str(voice_path) + ".json")
        if not config_path.is_file():
            raise TtsError(f"Piper voice {voice_path} has no {config_path.name} beside it")
        try:
            self._voice: Any = PiperVoice.load(voice_path, config_path=config_path)
        except Exception as exc:  # onnxruntime and json errors vary
            raise TtsError(f"cannot load the Piper voice {voice_path}: {exc}") from exc
        self._config = SynthesisConfig(length_scale=length_scale)
        self.sample_rate: int = int(self._voice.config.sample_rate)
        self.language: str = str(self._voice.config.espeak_voice)
        self.label: str = Path(voice_path).name.removesuffix(".onnx")

    def synthesize(self, text: str) -> bytes:
        """Speak `text`; returns mono s16le PCM at `sample_rate` (empty for text with nothing to say)."""
        if not text.strip():
            return b""
        try:
            return b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text, self._config))
        except Exception as exc:
            raise TtsError(f"speech synthesis failed for {text[:40]!r}: {exc}") from exc
