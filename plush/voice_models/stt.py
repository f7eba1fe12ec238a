"""Speech to text with faster-whisper (CTranslate2): load a model once, transcribe utterances.

Decoding is greedy at temperature 0 with no conditioning on earlier text: utterances to a plush are short, so the
fallback temperatures and long-form tricks cost latency without helping. The model loads from a local folder
only (never from the network at run time).

An utterance that fits Whisper's 30 s window (every one the plush sends: the VAD cuts segments shorter) is
encoded once, and that one encoder output serves both language detection and decoding; faster-whisper's own
`transcribe` encodes twice when it detects the language, which doubles the cost of the slowest step on a CPU.
Detection keeps only the owner's languages (`[stt] languages`): Whisper base, hearing a child's Korean, would
otherwise often answer "Japanese" or "Thai" and transcribe in that script.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.config import SttConfig
from plush.errors import AudioFormatError, PlushError
from plush.voice_models.audio import WHISPER_RATE, FloatAudio
from plush.voice_models.loop_guard import looks_like_loop, token_budget
from plush.voice_models.model_store import ModelStore

WINDOW_SAMPLES = 30 * WHISPER_RATE
"""Whisper's window. Longer audio takes faster-whisper's own path, which slides the window along."""
FRAMES_PER_SECOND = 100
"""Mel frames per second of audio (hop of 160 samples at 16 kHz); the encoder halves them."""
FULL_FRAMES = 30 * FRAMES_PER_SECOND
LOG_PROB_THRESHOLD = -1.0
"""A segment that looks silent is kept anyway when its text is this likely (faster-whisper's default rule)."""


class SttError(PlushError):
    """The speech model could not be loaded or failed on an utterance."""


@dataclass(frozen=True)
class SttOptions:
    """How an utterance is decoded."""

    language: str | None = None
    """A Whisper language code, or None to detect it."""
    languages: tuple[str, ...] = ()
    """When detecting: the languages it may choose from (the likeliest of these wins); empty allows any."""
    beam_size: int = 1
    max_new_tokens: int = 128
    no_speech_threshold: float | None = 0.6
    encoder_window: str = "full"
    """"full": pad every utterance to Whisper's 30 s window (how it was trained). "fit": encode a shorter
    window (`fit_min_s`, `fit_tail_s`), several times less work on a CPU; an output that loops or outruns the
    audio's token budget is decoded again with the full window."""
    fit_min_s: float = 6.0
    """Shortest "fit" window. Whisper base, given only the phrase (1-3 s), repeats it instead of ending the
    text on 11 of 13 short questions; in a 5-6 s window it ends them as the full window does. On 72 spoken
    questions (534 words) 6 s made 1-3 word errors more than the full window, 5 s 4 (bench/README.md)."""
    fit_tail_s: float = 2.0
    """Silence (zero features, as the full window pads) after the speech in a "fit" window, for the same
    reason: the decoder ends the text where it sees the speech end."""
    fit_fallback: bool = True
    """False keeps a "fit" text even when it loops: only for benchmarks on random weights, which always loop
    (they measure the cost of the window, not its words)."""


@dataclass(frozen=True)
class TranscriptResult:
    """What was said, in which language, and how long decoding took."""

    text: str
    language: str
    audio_s: float
    elapsed_s: float
    window: str = "full"
    """The window whose text this is: "fit", "full" (also after a "fit" fallback) or "long" (over 30 s)."""


@dataclass(frozen=True)
class _Decoded:
    text: str
    tokens: int
    silent: bool


def pick_language(ranked: list[tuple[str, float]], allowed: tuple[str, ...]) -> str:
    """The likeliest language of `ranked` (Whisper codes, best first) that is in `allowed` (empty: any)."""
    for code, _ in ranked:
        if not allowed or code in allowed:
            return code
    return allowed[0] if allowed else ranked[0][0]


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
        self.multilingual: bool = bool(self._model.model.is_multilingual)
        """False for English-only models (tiny.en, ...): they always transcribe English."""

    @classmethod
    def from_config(cls, config: SttConfig, store: ModelStore) -> Transcriber:
        """The Whisper model named in `[stt]`, with its decoding options."""
        options = SttOptions(
            language=None if config.language == "auto" else config.language,
            languages=tuple(config.languages),
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
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        language = language or self.options.language
        if not self.multilingual:
            language = "en"
        if samples.size <= WINDOW_SAMPLES:
            text, language, window = self._transcribe_window(samples, language)
        else:
            text, language, window = *self._transcribe_long(samples, language), "long"
        return TranscriptResult(
            text=text,
            language=language,
            audio_s=samples.size / WHISPER_RATE,
            elapsed_s=time.perf_counter() - started,
            window=window,
        )

    def _transcribe_window(self, audio: FloatAudio, language: str | None) -> tuple[str, str, str]:
        """One utterance of at most 30 s: one encoder pass for language and text (two if "fit" falls back)."""
        budget = min(self.options.max_new_tokens, token_budget(audio.size / WHISPER_RATE))
        features = self._model.feature_extractor(audio)[:, :-1]  # the last frame is padding (as faster-whisper)
        frames = self.fit_frames(features.shape[-1]) if self.options.encoder_window == "fit" else FULL_FRAMES
        if frames < FULL_FRAMES:
            encoded = self._encode(features, frames)
            fit_language = language or self._detect(encoded)
            decoded = self._decode(encoded, fit_language, budget)
            outran = decoded.tokens >= budget and budget < self.options.max_new_tokens
            looped = outran or looks_like_loop(decoded.text)
            if decoded.silent or not looped or not self.options.fit_fallback:
                return decoded.text, fit_language, "fit"
        encoded = self._encode(features, FULL_FRAMES)
        language = language or self._detect(encoded)
        decoded = self._decode(encoded, language, budget)  # the budget bounds a loop here too
        return decoded.text, language, "full"

    def fit_frames(self, speech_frames: int) -> int:
        """The "fit" window for an utterance of `speech_frames` mel frames: the speech, then silence."""
        opts = self.options
        frames = math.ceil(max(opts.fit_min_s * FRAMES_PER_SECOND, speech_frames + opts.fit_tail_s * FRAMES_PER_SECOND))
        return min(frames + frames % 2, FULL_FRAMES)  # the encoder's stride is 2

    def _encode(self, features: np.ndarray[Any, Any], frames: int) -> Any:
        """The encoder output for `features` cut or zero-padded to `frames` mel frames."""
        from faster_whisper.audio import pad_or_trim

        return self._model.encode(np.ascontiguousarray(pad_or_trim(features, frames)))

    def _detect(self, encoded: Any) -> str:
        """The likeliest allowed language, from an encoder output the decoder then reuses."""
        if not self.multilingual:
            return "en"
        ranked = [(token[2:-2], prob) for token, prob in self._model.model.detect_language(encoded)[0]]
        return pick_language(ranked, self.options.languages)

    def _decode(self, encoded: Any, language: str, max_new_tokens: int) -> _Decoded:
        """Greedy (or beam) decoding with faster-whisper's prompt, token suppression and no-speech rule."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model, opts = self._model, self.options
        tokenizer = Tokenizer(model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=opts.beam_size,
            max_length=min(len(prompt) + max_new_tokens, model.max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        avg_log_prob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        silent = (
            opts.no_speech_threshold is not None
            and result.no_speech_prob > opts.no_speech_threshold
            and avg_log_prob < LOG_PROB_THRESHOLD
        )
        text = "" if silent else tokenizer.decode(tokens).strip()
        return _Decoded(text=text, tokens=len(result.sequences_ids[0]), silent=silent)

    def _transcribe_long(self, audio: FloatAudio, language: str | None) -> tuple[str, str]:
        """Over 30 s: faster-whisper slides its window along; the language comes from the first 30 s."""
        opts = self.options
        if language is None and opts.languages:
            _, _, ranked = self._model.detect_language(audio=audio)
            language = pick_language(ranked, opts.languages)
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=opts.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            max_new_tokens=opts.max_new_tokens,
            no_speech_threshold=opts.no_speech_threshold,
            vad_filter=False,
        )
        return "".join(segment.text for segment in segments).strip(), str(info.language)
