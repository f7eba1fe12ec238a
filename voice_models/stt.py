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

FIT_MAX_SAMPLES = 30 * WHISPER_RATE
"""Longer audio than Whisper's window always takes faster-whisper's own path."""


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
    encoder_window: str = "full"
    """"full": pad every utterance to Whisper's 30 s window (how it was trained; most accurate). "fit": encode
    only the utterance's own length (at least 1 s), which is 10-30x faster on a CPU for short phrases."""


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

    def _transcribe_fit(self, audio: FloatAudio, language: str | None) -> tuple[str, str]:
        """Greedy or beam decoding of one short utterance with an encoder input only as long as the audio.

        faster-whisper always pads to 30 s, so this drives its CTranslate2 model directly, with faster-whisper's
        own prompt, token suppression and language detection.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model, opts = self._model, self.options
        if audio.size < WHISPER_RATE:  # at least a second, as silence: very short inputs decode poorly
            audio = np.pad(audio, (0, WHISPER_RATE - audio.size))
        features = model.feature_extractor(audio)
        features = features[:, : features.shape[-1] - features.shape[-1] % 2]  # the encoder's stride is 2
        encoded = model.encode(features)
        language = language or opts.language
        if language is None:
            ranked = model.model.detect_language(encoded)[0]
            language = ranked[0][0][2:-2]
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=opts.beam_size,
            max_length=len(prompt) + opts.max_new_tokens,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
            return_no_speech_prob=True,
        )[0]
        if opts.no_speech_threshold is not None and result.no_speech_prob > opts.no_speech_threshold:
            return "", language
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        return tokenizer.decode(tokens).strip(), language

    @classmethod
    def from_config(cls, config: SttConfig, store: ModelStore) -> Transcriber:
        """The Whisper model named in `[stt]`, with its decoding options."""
        options = SttOptions(
            language=None if config.language == "auto" else config.language,
            beam_size=config.beam_size,
            max_new_tokens=config.max_new_tokens,
            no_speech_threshold=config.no_speech_threshold,
            encoder_window=config.encoder_window,
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
        if opts.encoder_window == "fit" and audio.size <= FIT_MAX_SAMPLES:
            text, detected = self._transcribe_fit(np.ascontiguousarray(audio, dtype=np.float32), language)
            return TranscriptResult(
                text=text, language=detected, audio_s=audio.size / WHISPER_RATE, elapsed_s=time.perf_counter() - started
            )
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
