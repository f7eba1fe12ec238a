"""Voice activity detection that runs as audio arrives: Silero VAD (shipped inside faster-whisper) frame by frame.

`SpeechSegmenter` turns a stream of 16 kHz audio into closed speech segments: a segment closes when speech is
followed by `min_silence_ms` of silence (a pause), grows at most to `max_segment_s`, and gets `pad_ms` of audio
on each side. It keeps the model's recurrent state and the frame context between calls, so the segments depend
only on the audio, never on how it was split into chunks: feeding a recording in 40 ms pieces while the button
is held, or all at once afterwards, gives the same segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.errors import PlushError
from plush.voice_models.audio import WHISPER_RATE, FloatAudio

FRAME = 512
"""Samples per VAD frame (32 ms at 16 kHz), as Silero expects."""
CONTEXT = 64
"""Samples of the previous frame that Silero sees before each frame."""


class VadError(PlushError):
    """The VAD model could not be loaded."""


@dataclass(frozen=True)
class VadOptions:
    """When speech starts and ends."""

    threshold: float = 0.5
    """Speech probability that starts speech; speech continues until it falls 0.15 below this."""
    min_silence_ms: int = 400
    """A pause this long closes a segment (a breath between clauses is shorter)."""
    min_speech_ms: int = 200
    """Shorter blips (a click, a cough) are not segments."""
    pad_ms: int = 160
    """Audio kept before and after each segment, so no word is clipped."""
    max_segment_s: float = 28.0
    """Longest segment; Whisper decodes at most 30 s at a time."""


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in samples from the start of the utterance (end exclusive)."""

    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / WHISPER_RATE


def silero_model_path() -> Path:
    """The Silero VAD model that faster-whisper ships (no download)."""
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise VadError("voice activity detection needs faster-whisper: pip install 'plush[device]'") from exc
    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class SileroVad:
    """Silero VAD with its state carried from frame to frame; `probabilities` takes whole frames only."""

    def __init__(self, model_path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise VadError("voice activity detection needs onnxruntime: pip install 'plush[device]'") from exc
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        path = model_path or silero_model_path()
        try:
            self._session: Any = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=options
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VadError(f"cannot load the VAD model {path}: {exc}") from exc

    def probabilities(self, frames: FloatAudio, state: VadState) -> FloatAudio:
        """Speech probability of each 512-sample frame in `frames` (its length a multiple of 512).

        The model is shared (ONNX Runtime sessions are thread-safe); each stream of audio has its own `state`.
        """
        batch = frames.reshape(-1, FRAME)
        out = np.empty(len(batch), dtype=np.float32)
        for i, frame in enumerate(batch):  # one at a time: the result must not depend on how audio was batched
            window = np.concatenate([state.context, frame])[None, :]
            prob, state.h, state.c = self._session.run(None, {"input": window, "h": state.h, "c": state.c})
            out[i] = float(np.asarray(prob).reshape(-1)[0])
            state.context = frame[-CONTEXT:]
        return out


class VadState:
    """The recurrent state and frame context of one audio stream."""

    def __init__(self) -> None:
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)


class SpeechSegmenter:
    """Feed audio with `feed`; it returns the segments closed so far. `finish` closes the last one."""

    def __init__(self, vad: SileroVad, options: VadOptions | None = None) -> None:
        self.vad = vad
        self.options = options or VadOptions()
        ms = WHISPER_RATE // 1000
        self._min_silence = self.options.min_silence_ms * ms
        self._min_speech = self.options.min_speech_ms * ms
        self._pad = self.options.pad_ms * ms
        self._max_segment = int(self.options.max_segment_s * WHISPER_RATE)
        self._state = VadState()
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0  # samples given to the VAD so far
        self._speech_start: int | None = None
        self._silence_start: int | None = None
        self._last_end = 0  # segments never overlap

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    @property
    def voiced(self) -> bool:
        """Someone is speaking right now (not in a pause of the open segment)."""
        return self._speech_start is not None and self._silence_start is None

    def feed(self, audio: FloatAudio) -> list[Segment]:
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        whole = len(self._pending) // FRAME * FRAME
        if whole == 0:
            return []
        frames, self._pending = self._pending[:whole], self._pending[whole:]
        closed: list[Segment] = []
        opts = self.options
        for prob in self.vad.probabilities(frames, self._state):
            frame_start = self._position
            self._position += FRAME
            if self._speech_start is None:
                if prob >= opts.threshold:
                    self._speech_start, self._silence_start = frame_start, None
                continue
            if prob >= opts.threshold:
                self._silence_start = None
            elif prob < opts.threshold - 0.15 and self._silence_start is None:
                self._silence_start = frame_start
            if self._silence_start is not None and self._position - self._silence_start >= self._min_silence:
                closed.extend(self._close(self._silence_start))
            elif self._position - self._speech_start >= self._max_segment:
                closed.extend(self._close(self._position, limit=self._position))  # mid-speech: no padding
        return closed

    def settled(self) -> Segment | None:
        """The open segment, if it is already what closing it will give: speech has stopped and its padding has
        arrived. Only new speech before the pause reaches `min_silence_ms` (or the end) can change it, so it
        may be decoded ahead of time (see streaming_stt.py)."""
        start, silence = self._speech_start, self._silence_start
        if start is None or silence is None or self._position < silence + self._pad:
            return None
        if silence - start < self._min_speech:
            return None
        return Segment(max(self._last_end, start - self._pad), silence + self._pad)

    def finish(self, total_samples: int | None = None) -> list[Segment]:
        """Close the segment still open at the end of the audio (`total_samples` long)."""
        end = self._position + len(self._pending) if total_samples is None else total_samples
        self._pending = np.zeros(0, dtype=np.float32)
        if self._speech_start is None:
            return []
        speech_end = self._silence_start if self._silence_start is not None else end
        return self._close(speech_end, limit=end)

    def _close(self, speech_end: int, limit: int | None = None) -> list[Segment]:
        assert self._speech_start is not None
        start = max(self._last_end, self._speech_start - self._pad)
        long_enough = speech_end - self._speech_start >= self._min_speech
        self._speech_start = self._silence_start = None
        if not long_enough:
            return []
        end = speech_end + self._pad
        if limit is not None:
            end = min(end, limit)
        self._last_end = end
        return [Segment(start, end)]
