"""The plush's own microphone and speaker code (Recorder, Player, SpeakerSink) on real sounddevice streams.

A headless PulseAudio gives PortAudio real, paced devices: what is fed into its `micfeed` sink is what the
default input hears, and what the default output plays can be recorded from `speaker.monitor`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from conftest import ConfigFactory
from fakes.pulse import HeadlessPulse, sine_pcm
from test_end_to_end import speechlike_wav

from plush.device.audio_io import Player, Recorder
from plush.device.client import CompanionClient
from plush.device.runtime import Plush, SpeakerSink, State
from voice_models.audio import read_audio_file
from voice_models.model_store import ModelStore
from voice_models.stt import Transcriber


def dominant_frequency(pcm: bytes, rate: int) -> float:
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    signal -= signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(spectrum.argmax())])


def rms(pcm: bytes) -> float:
    samples: npt.NDArray[np.float64] = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def test_recorder_captures_what_the_microphone_hears(pulse: HeadlessPulse) -> None:
    feeder = pulse.feed_mic(sine_pcm(440, 3.0), rate=16000)
    recorder = Recorder(sample_rate=16000)
    try:
        time.sleep(0.3)
        recorder.start()
        time.sleep(1.0)
        pcm = recorder.stop()
    finally:
        feeder.terminate()
        feeder.wait(timeout=5)
    assert 0.7 * 32000 < len(pcm) < 1.5 * 32000  # about one second of 16 kHz mono s16le
    assert rms(pcm) > 3000
    assert abs(dominant_frequency(pcm, 16000) - 440) < 5


def test_recorder_stops_at_the_maximum_length(pulse: HeadlessPulse) -> None:
    recorder = Recorder(sample_rate=16000, max_seconds=0.25)
    recorder.start()
    time.sleep(0.8)
    assert len(recorder.stop()) == 2 * 4000


def test_player_plays_what_it_is_given_as_it_arrives(pulse: HeadlessPulse) -> None:
    tone = sine_pcm(660, 1.0, 22050)
    with pulse.record_speaker(rate=16000) as speaker:
        player = Player(22050)
        for start in range(0, len(tone), 4410):  # 100 ms chunks, the server's chunk size
            player.write(tone[start : start + 4410])
        player.finish(timeout_s=10)
    heard = speaker.pcm
    assert rms(heard) > 3000
    assert abs(dominant_frequency(heard, 16000) - 660) < 5


def test_stop_now_silences_the_speaker_at_once(pulse: HeadlessPulse) -> None:
    player = Player(22050)
    player.write(sine_pcm(660, 5.0, 22050))
    time.sleep(0.3)
    started = time.perf_counter()
    player.stop_now()
    assert time.perf_counter() - started < 0.5
    with pulse.record_speaker(rate=16000) as speaker:
        time.sleep(0.5)
    assert rms(speaker.pcm) < 100


async def test_a_spoken_turn_plays_the_reply_on_the_speaker(
    pulse: HeadlessPulse, running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    states: list[State] = []
    pcm = read_audio_file(speechlike_wav(tmp_path / "q.wav"))
    with pulse.record_speaker(rate=16000) as speaker:
        async with CompanionClient(f"127.0.0.1:{running_server.port}", "speaker-test") as client:
            plush = Plush(config.device, client, transcriber, on_state=states.append)
            result = await plush.take_turn(pcm, SpeakerSink())
        await asyncio.sleep(0.2)
    assert result.audio_chunks > 0 and not result.errors
    assert states == [State.THINKING, State.SPEAKING]
    played_s = len(speaker.pcm) / 32000
    assert rms(speaker.pcm) > 500, "the reply was not heard on the speaker"
    assert played_s > 0.5
    # The suite's voice speaks a 220 Hz tone: what the speaker played is what the server synthesized.
    assert abs(dominant_frequency(speaker.pcm, 16000) - 220) < 5
