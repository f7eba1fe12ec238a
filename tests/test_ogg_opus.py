"""Voice notes: the real voice joe speaks, the note is OGG/Opus as Telegram wants it, and Whisper base hears the
sentence again after the round trip (and from an mp3 or m4a a user sends instead); what is not a usable voice note
is refused with an error the sender can act on."""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from plush.config import SttConfig
from plush.errors import AudioFormatError
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.model_store import ModelStore
from plush.voice_models.ogg_opus import (
    MAX_NOTE_BYTES,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    Pcm16,
    UnreadableAudioError,
    decode_voice_note,
    encode_voice_note,
)
from plush.voice_models.speech_scoring import word_error_rate
from plush.voice_models.stt import Transcriber
from plush.voice_models.tts import Synthesizer

SENTENCE = "Can you tell me a story about a dragon who lives in the mountains?"


@pytest.fixture(scope="module")
def joe_says(real_joe_voice: Path) -> tuple[Pcm16, int]:
    """The sentence in joe's voice, at the voice's own rate (22,050 Hz)."""
    voice = Synthesizer(real_joe_voice)
    return np.frombuffer(voice.synthesize(SENTENCE), dtype="<i2").astype(np.int16), voice.sample_rate


@pytest.fixture(scope="module")
def whisper(real_whisper_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    store = ModelStore(tmp_path_factory.mktemp("store"))
    return Transcriber.from_config(SttConfig(model=str(real_whisper_base)), store)


def heard(whisper: Transcriber, pcm: Pcm16) -> str:
    return whisper.transcribe(pcm16_to_float(pcm.tobytes()), language="en").text


def encoded(pcm: Pcm16, rate: int, container: str, codec: str, *, channels: int = 1, out_rate: int = 44100) -> bytes:
    """`pcm` as a file another app would send: `codec` in `container`, at `out_rate`, mono or stereo."""
    samples = np.frombuffer(resample_pcm16(pcm.tobytes(), rate, out_rate), dtype="<i2")
    layout = "stereo" if channels == 2 else "mono"
    out = io.BytesIO()
    with av.open(out, "w", format=container) as file:
        stream = file.add_stream(codec, rate=out_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.repeat(samples, channels)[None, :], format="s16", layout=layout)
        frame.sample_rate, frame.pts = out_rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            file.mux(packet)
    return out.getvalue()


def tone(seconds: float, rate: int = 16000) -> Pcm16:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 330 * t) * 8000).astype(np.int16)


def wav(pcm: Pcm16, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm.tobytes())
    return out.getvalue()


@pytest.mark.real_weights
def test_joes_sentence_survives_a_voice_note_round_trip_and_whisper_hears_it(
    joe_says: tuple[Pcm16, int], whisper: Transcriber
) -> None:
    pcm, rate = joe_says
    note = encode_voice_note(pcm, rate)
    assert note.data[:4] == b"OggS"
    with av.open(io.BytesIO(note.data)) as file:
        [stream] = file.streams.audio
        assert (file.format.name, stream.codec_context.name) == ("ogg", "opus")
        assert (stream.codec_context.sample_rate, stream.codec_context.channels) == (48000, 1)
    assert note.seconds == pytest.approx(len(pcm) / rate)
    assert note.duration_s == math.ceil(note.seconds)
    assert len(note.data) < len(pcm) * 2 / 8, "Opus at speech bitrate is far smaller than the PCM"

    back = decode_voice_note(note.data, max_seconds=60)
    assert back.dtype == np.int16
    assert len(back) / WHISPER_RATE == pytest.approx(note.seconds, abs=0.03)
    text = heard(whisper, back)
    assert word_error_rate(SENTENCE, text) <= 0.1, text


@pytest.mark.real_weights
@pytest.mark.parametrize(("container", "codec"), [("mp3", "libmp3lame"), ("ipod", "aac")], ids=["mp3", "m4a"])
def test_an_mp3_or_m4a_in_stereo_is_heard_as_well(
    joe_says: tuple[Pcm16, int], whisper: Transcriber, container: str, codec: str
) -> None:
    pcm, rate = joe_says
    back = decode_voice_note(encoded(pcm, rate, container, codec, channels=2), max_seconds=60)
    assert len(back) / WHISPER_RATE == pytest.approx(len(pcm) / rate, abs=0.1)
    text = heard(whisper, back)
    assert word_error_rate(SENTENCE, text) <= 0.1, text


def test_telegrams_duration_is_whole_seconds_rounded_up() -> None:
    assert [encode_voice_note(tone(s, 8000), 8000).duration_s for s in (0.2, 1.0, 2.01, 2.5)] == [1, 1, 3, 3]


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(7).bytes(30_000),
        b"Shopping list:\n- milk\n- eggs\n- a new battery for the plush\n" * 40,
        b"%PDF-1.7\n" + bytes(2000),
    ],
    ids=["random-bytes", "text-file", "pdf"],
)
def test_what_is_not_audio_is_refused_as_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableAudioError, match="not audio I can read"):
        decode_voice_note(data, max_seconds=60)


def test_a_file_with_no_sound_in_it_is_refused() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    with pytest.raises(UnreadableAudioError, match="no sound in it"):
        decode_voice_note(png, max_seconds=60)


def test_an_empty_file_or_a_wav_without_samples_or_a_tap_is_too_short() -> None:
    with pytest.raises(AudioTooShortError, match="empty"):
        decode_voice_note(b"", max_seconds=60)
    with pytest.raises(AudioTooShortError, match=r"too short .*\(0\.0 s\)"):
        decode_voice_note(wav(tone(0), 16000), max_seconds=60)
    with pytest.raises(AudioTooShortError, match=r"\(0\.2 s\)"):
        decode_voice_note(encode_voice_note(tone(0.2), 16000).data, max_seconds=60)


def test_a_long_note_is_refused_from_its_header_without_decoding() -> None:
    """Ten minutes of WAV: the length comes from the header (`seconds` is only known from there)."""
    with pytest.raises(AudioTooLongError, match="600 s long; I listen to at most 60 s") as refused:
        decode_voice_note(wav(np.zeros(600 * 8000, dtype=np.int16), 8000), max_seconds=60)
    assert refused.value.seconds == pytest.approx(600)


def test_a_note_just_past_the_limit_is_refused_when_decoding_reaches_the_limit() -> None:
    note = encode_voice_note(tone(2.5), 16000).data  # the header says 2.5 s: within the header's slack of 2 s
    with pytest.raises(AudioTooLongError, match="too long; I listen to at most 2 s") as refused:
        decode_voice_note(note, max_seconds=2)
    assert refused.value.seconds is None
    assert len(decode_voice_note(note, max_seconds=3)) / WHISPER_RATE == pytest.approx(2.5, abs=0.03)


def test_a_file_far_larger_than_a_voice_note_is_refused_before_decoding() -> None:
    with pytest.raises(AudioTooLargeError, match="far larger than a voice note"):
        decode_voice_note(bytes(MAX_NOTE_BYTES + 1), max_seconds=60)


def test_encoding_refuses_empty_or_non_int16_audio() -> None:
    with pytest.raises(AudioFormatError, match="empty"):
        encode_voice_note(np.zeros(0, dtype=np.int16), 16000)
    with pytest.raises(AudioFormatError, match="mono int16"):
        encode_voice_note(np.zeros(1600, dtype=np.float32), 16000)
    with pytest.raises(AudioFormatError, match="mono int16"):
        encode_voice_note(np.zeros((2, 1600), dtype=np.int16), 16000)
