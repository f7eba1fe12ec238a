"""Speech to text with faster-whisper (CTranslate2): load a model once, transcribe utterances.

Decoding is greedy at temperature 0 with no conditioning on earlier text: utterances to a plush are short, so the
fallback temperatures and long-form tricks cost latency without helping. The model loads from a local folder
only (never from the network at run time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.config import SttConfig
from plush.errors import AudioFormatError, PlushError
from voice_models.audio import WHISPER_RATE, FloatAudio
from voice_models.model_store import ModelStore


class SttError(PlushError):
    """The speech model could not be loaded or failed on an utterance."""


@dataclass(frozen=True)
class SttOptions:
    """How an utterance is decoded."""

    language: str | None = None
    """A Whisper language code, or None to detect it."""
    beam_size: int = 1
    max_new_tokens: int = 128
    no_speech_threshold: float | None = 0.6


@dataclass(frozen=True)
class TranscriptResult:
    """What was said, in which language, and how long decoding took."""

    text: str
    language: str
    audio_s: float
    elapsed_s: float


class Transcriber:
    """A loaded Whisper model; `transcribe` is blocking, so async callers run it in a thread."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        options: SttOptions | None = None,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise SttError("speech to text needs faster-whisper: pip install 'plush[device]'") from exc
        try:
            self._model: Any = WhisperModel(
                str(model_dir),
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for broken folders
            raise SttError(f"cannot load the Whisper model in {model_dir}: {exc}") from exc
        self.options = options or SttOptions()

    @classmethod
    def from_config(cls, config: SttConfig, store: ModelStore) -> Transcriber:
        """The Whisper model named in `[stt]`, with its decoding options."""
        options = SttOptions(
            language=None if config.language == "auto" else config.language,
            beam_size=config.beam_size,
            max_new_tokens=config.max_new_tokens,
            no_speech_threshold=config.no_speech_threshold,
        )
        return cls(
            store.resolve(config.model, "stt"),
            device=config.device,
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            options=options,
        )

    def transcribe(self, audio: FloatAudio, *, language: str | None = None) -> TranscriptResult:
        """Transcribe mono float32 audio at 16 kHz; empty audio is an error, silence gives empty text.

        `language` overrides the configured one (streaming passes the language its first segment found).
        """
        if audio.size == 0:
            raise AudioFormatError("empty recording: there is no audio to transcribe")
        started = time.perf_counter()
        opts = self.options
        segments, info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=language or opts.language,
            beam_size=opts.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            max_new_tokens=opts.max_new_tokens,
            no_speech_threshold=opts.no_speech_threshold,
            vad_filter=False,
        )
        text = "".join(segment.text for segment in segments).strip()
        return TranscriptResult(
            text=text,
            language=str(info.language),
            audio_s=audio.size / WHISPER_RATE,
            elapsed_s=time.perf_counter() - started,
        )
