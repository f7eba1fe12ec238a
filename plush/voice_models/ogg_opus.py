"""Voice notes: any audio file a person sends (Telegram's OGG/Opus, an mp3, an m4a) -> PCM, and PCM -> OGG/Opus.

A voice note comes from outside, so decoding checks it before trusting it: bytes that are not audio, a file with
no sound, a note too short to hold a word, one longer than the caller listens to (refused from the container's
own duration when it states one, and decoding stops at the limit when it does not), or a file larger than any
voice note. Each refusal is a typed `AudioFormatError` whose message can be shown to the sender as it is.

Encoding makes what Telegram plays as a voice note (`sendVoice`): mono Opus at 48 kHz in an OGG container, at the
speech bitrate the plush's Opus stream uses (`opus.BITRATE`). Both directions are blocking (FFmpeg through PyAV),
so async callers run them in a worker thread. Resampling is soxr's, through `audio.py`, like all of Plush's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from plush.errors import AudioFormatError
from plush.voice_models.audio import WHISPER_RATE, PcmResampleStream, resample_pcm16
from plush.voice_models.opus import BITRATE, _av

Pcm16 = npt.NDArray[np.int16]
OGG_OPUS_RATE = 48000
"""Opus always runs at 48 kHz inside an OGG file that Telegram shows as a voice note."""
VOICE_NOTE_MIME = "audio/ogg"
MIN_SECONDS = 0.3
"""Shorter than this holds no word: a slip of the thumb on the record button."""
MAX_NOTE_BYTES = 20 * 1024 * 1024
"""Larger than any voice note (and than the 20 MB a Telegram bot may download): refused before decoding."""
DECLARED_SLACK_S = 1.0
"""How far a container's stated duration may exceed the limit before it alone refuses the note: the stated
figure includes the codec's pre-skip (OGG) or is an estimate from the bitrate (MP3); the decoded samples decide
within this margin."""


class UnreadableAudioError(AudioFormatError):
    """The bytes are not audio FFmpeg can decode (a text file, a photo, a broken upload), or hold no sound."""


class AudioTooShortError(AudioFormatError):
    """Empty, or shorter than `MIN_SECONDS`."""


class AudioTooLongError(AudioFormatError):
    """Longer than the caller listens to; `seconds` is the note's length when the container states it."""

    def __init__(self, max_seconds: float, seconds: float | None = None) -> None:
        self.max_seconds = max_seconds
        self.seconds = seconds
        length = f"{seconds:.0f} s long" if seconds is not None else "too long"
        super().__init__(f"that voice note is {length}; I listen to at most {max_seconds:g} s at a time")


class AudioTooLargeError(AudioFormatError):
    """A file far larger than any voice note (`MAX_NOTE_BYTES`)."""


@dataclass(frozen=True)
class VoiceNote:
    """An OGG/Opus file ready for Telegram's `sendVoice`."""

    data: bytes
    """The whole OGG file."""
    duration_s: int
    """Whole seconds, rounded up: Telegram's `duration` field (at least 1)."""
    seconds: float
    """The exact length of the audio that went in."""


def decode_voice_note(data: bytes, *, max_seconds: float, rate: int = WHISPER_RATE) -> Pcm16:
    """Any audio file PyAV reads -> mono int16 PCM at `rate` (16 kHz for Whisper); refuses what is not a usable
    voice note with an `AudioFormatError` subclass (see the module docstring)."""
    if max_seconds <= 0 or not 1000 <= rate <= 384_000:
        raise ValueError(f"max_seconds must be positive and rate a sample rate, not {max_seconds} and {rate}")
    if not data:
        raise AudioTooShortError("that voice note is empty: the file has no bytes in it")
    if len(data) > MAX_NOTE_BYTES:
        raise AudioTooLargeError(
            f"that file is {len(data) / 1e6:.0f} MB, far larger than a voice note "
            f"(at most {MAX_NOTE_BYTES // 2**20} MB); send a shorter recording"
        )
    av = _av()
    try:
        container = av.open(io.BytesIO(data), metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise UnreadableAudioError(f"that voice note is not audio I can read ({_reason(exc)})") from exc
    with container:
        if not container.streams.audio:
            raise UnreadableAudioError("that file has no sound in it: send a voice note or an audio file")
        stream = container.streams.audio[0]
        stated = _stated_seconds(container, stream)
        if stated is not None and stated > max_seconds + DECLARED_SLACK_S:
            raise AudioTooLongError(max_seconds, stated)
        pcm = _decode(av, container, stream, max_seconds, rate)
    if pcm.size < MIN_SECONDS * rate:
        raise AudioTooShortError(
            f"that voice note is too short to hear anything ({pcm.size / rate:.1f} s); "
            "hold the record button while you speak"
        )
    return pcm


def encode_voice_note(pcm: npt.NDArray[Any], rate: int) -> VoiceNote:
    """Mono int16 PCM at `rate` -> a Telegram voice note: Opus (speech mode, `opus.BITRATE`) at 48 kHz in OGG."""
    samples = np.asarray(pcm)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise AudioFormatError(
            f"a voice note is made from mono int16 PCM, not {samples.dtype} of shape {samples.shape}"
        )
    if samples.size == 0:
        raise AudioFormatError("there is nothing to say: the audio for the voice note is empty")
    seconds = samples.size / rate
    at_48k = np.frombuffer(resample_pcm16(samples.astype("<i2").tobytes(), rate, OGG_OPUS_RATE), dtype="<i2")
    av = _av()
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OGG_OPUS_RATE, options={"application": "voip"})
        stream.layout = "mono"
        stream.bit_rate = BITRATE
        frame = av.AudioFrame.from_ndarray(at_48k[None, :], format="s16", layout="mono")
        frame.sample_rate = OGG_OPUS_RATE
        frame.time_base = Fraction(1, OGG_OPUS_RATE)
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return VoiceNote(data=out.getvalue(), duration_s=max(1, math.ceil(round(seconds, 3))), seconds=seconds)


def _stated_seconds(container: Any, stream: Any) -> float | None:
    """The length the file claims (container header, else the stream's), without decoding; None if it is silent."""
    if container.duration:
        return float(container.duration) / 1_000_000
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _decode(av: Any, container: Any, stream: Any, max_seconds: float, rate: int) -> Pcm16:
    """Decode to mono s16 at the file's own rate (PyAV mixes the channels), then soxr to `rate` as it goes;
    stops with AudioTooLongError as soon as the audio passes `max_seconds`."""
    pieces: list[bytes] = []
    mixer: Any = None
    resampler: PcmResampleStream | None = None
    native_rate, native_samples = 0, 0
    try:
        for frame in container.decode(stream):
            if mixer is None:
                native_rate = int(frame.sample_rate)
                mixer = av.AudioResampler(format="s16", layout="mono", rate=native_rate)
                resampler = PcmResampleStream(native_rate, rate)
            for mixed in mixer.resample(frame):
                chunk = mixed.to_ndarray().astype("<i2").tobytes()
                native_samples += len(chunk) // 2
                if native_samples > max_seconds * native_rate:
                    raise AudioTooLongError(max_seconds)
                assert resampler is not None
                pieces.append(resampler.feed(chunk))
        if mixer is not None and resampler is not None:
            tail = b"".join(m.to_ndarray().astype("<i2").tobytes() for m in mixer.resample(None))
            pieces.append(resampler.feed(tail, last=True))
    except (av.FFmpegError, ValueError) as exc:
        raise UnreadableAudioError(f"that voice note is damaged and cannot be played ({_reason(exc)})") from exc
    return np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.int16)


def _reason(exc: Exception) -> str:
    """FFmpeg's words for a failure, without the errno and the '<none>' file name PyAV adds for in-memory data."""
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
