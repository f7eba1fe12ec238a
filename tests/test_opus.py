"""Opus for the reply audio: round trips keep duration and pitch, a turn in Opus sounds like the PCM one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ConfigFactory
from test_end_to_end import speechlike_wav

from plush.device.client import CompanionClient
from plush.device.runtime import Plush, TurnResult, WavSink
from plush.errors import AudioFormatError
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.voice_models.audio import read_audio_file, read_wav, resample_pcm16
from plush.voice_models.model_store import ModelStore
from plush.voice_models.opus import OpusDecoder, OpusEncoder, opus_rate, pack_packets, unpack_packets
from plush.voice_models.stt import Transcriber


def tone(frequency: float, seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * 8000).astype("<i2").tobytes()


def pitch(pcm: bytes, rate: int) -> float:
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(spectrum.argmax())])


@pytest.mark.parametrize("piece_ms", [7, 20, 100, 1000])
def test_an_opus_round_trip_keeps_duration_and_pitch(piece_ms: int) -> None:
    rate = 24000
    pcm = tone(440, 1.0, rate)
    encoder, decoder = OpusEncoder(rate), OpusDecoder(22050)
    step = rate * piece_ms // 1000 * 2
    wire, out = 0, bytearray()
    for offset in range(0, len(pcm), step):
        if packets := encoder.encode(pcm[offset : offset + step]):
            chunk = pack_packets(packets)
            wire += len(chunk)
            out += decoder.decode(chunk)
    out += decoder.decode(pack_packets(encoder.flush())) + decoder.flush()
    seconds = len(out) / 2 / 22050
    assert 1.0 <= seconds <= 1.0 + 0.05, "codec delay and the padded last frame add at most a few frames"
    assert pitch(bytes(out), 22050) == pytest.approx(440, abs=5)
    assert wire < len(pcm) / 8, "Opus is far smaller than PCM"


def test_packets_survive_framing_and_malformed_chunks_are_refused() -> None:
    packets = [b"\x01" * 3, b"\x02" * 300, b"\x03"]
    assert unpack_packets(pack_packets(packets)) == packets
    for broken in (b"\x00", b"\x00\x05abc", b"\x00\x00"):
        with pytest.raises(AudioFormatError, match="malformed Opus chunk"):
            unpack_packets(broken)
    with pytest.raises(AudioFormatError, match="undecodable"):
        OpusDecoder(16000).decode(pack_packets([b"\xff" * 3]))


def test_opus_rates() -> None:
    assert [opus_rate(r) for r in (8000, 16000, 22050, 44100, 96000)] == [8000, 16000, 24000, 48000, 48000]
    with pytest.raises(AudioFormatError):
        OpusEncoder(22050)


def test_resampling_keeps_duration() -> None:
    pcm = tone(300, 2.0, 22050)
    for rate in (16000, 24000, 44100, 48000):
        out = resample_pcm16(pcm, 22050, rate)
        assert len(out) / 2 / rate == pytest.approx(2.0, abs=0.002)
        assert pitch(out, rate) == pytest.approx(300, abs=3)


async def turn(port: int, config: Any, wav: Path, out: Path) -> TurnResult:
    """One spoken turn, in a conversation of its own (so both turns get the same prompt)."""
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    async with CompanionClient(f"127.0.0.1:{port}", out.stem) as client:
        plush = Plush(config.device, client, transcriber)
        return await plush.take_turn(read_audio_file(wav), WavSink(out))


async def test_a_turn_in_opus_sounds_like_the_pcm_turn_at_a_fraction_of_the_bytes(
    running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    wav = speechlike_wav(tmp_path / "in.wav")
    pcm_result = await turn(running_server.port, make_config(), wav, tmp_path / "pcm.wav")
    opus_config = make_config(device={"id": "test-plush", "audio_encoding": "opus"})
    opus_result = await turn(running_server.port, opus_config, wav, tmp_path / "opus.wav")

    assert opus_result.reply == pcm_result.reply, "same seed, same words"
    assert opus_result.sample_rate == opus_rate(pcm_result.sample_rate)
    assert opus_result.audio_bytes < pcm_result.audio_bytes / 5
    pcm_audio, pcm_rate = read_wav(tmp_path / "pcm.wav")
    opus_audio, opus_rate_ = read_wav(tmp_path / "opus.wav")
    pcm_seconds, opus_seconds = len(pcm_audio) / 2 / pcm_rate, len(opus_audio) / 2 / opus_rate_
    assert opus_seconds == pytest.approx(pcm_seconds, abs=0.08)
    assert pitch(opus_audio, opus_rate_) == pytest.approx(pitch(pcm_audio, pcm_rate), rel=0.05)


async def test_an_unknown_output_encoding_is_refused(running_server: Any) -> None:
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "bad") as client:
        with pytest.raises(Exception, match="unknown output encoding 9"):
            [e async for e in client.chat("hi", want_audio=True, output_encoding=9)]
        call = await client.converse(pb.TurnStart(output_encoding=9), transcript="hello")
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            [e async for e in call.events()]
