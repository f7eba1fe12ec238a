"""Proves the headless PulseAudio harness gives sounddevice real, paced input and output devices.

Every audio test of Plush (capture, playback, barge-in) stands on this harness, so these checks
exercise the exact path production code uses: ``sounddevice`` -> PortAudio -> ALSA -> PulseAudio.
"""

from __future__ import annotations

import importlib
import os
import types
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fakes.pulse import HeadlessPulse, sine_pcm


@pytest.fixture
def sd(pulse: HeadlessPulse) -> types.ModuleType:
    """``sounddevice``, imported only once PortAudio is known to be loadable."""
    return importlib.import_module("sounddevice")


def _dominant_frequency(samples: npt.NDArray[np.generic], rate: int) -> float:
    signal = samples.astype(np.float64).ravel()
    signal -= signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(spectrum.argmax())])


def _rms(samples: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_sounddevice_lists_pulse_devices(sd: types.ModuleType) -> None:
    names = {device["name"] for device in sd.query_devices()}
    assert names & {"pulse", "default"}, f"no pulse/default device in {names}"
    default_in = sd.query_devices(kind="input")
    default_out = sd.query_devices(kind="output")
    assert default_in["max_input_channels"] > 0
    assert default_out["max_output_channels"] > 0


def test_default_input_hears_tone_fed_into_micfeed(pulse: HeadlessPulse, sd: types.ModuleType) -> None:
    rate = 16000
    feeder = pulse.feed_mic(sine_pcm(440, 2.0, rate), rate=rate)
    try:
        recording = sd.rec(rate, samplerate=rate, channels=1, dtype="int16", blocking=True)
    finally:
        feeder.terminate()
        feeder.wait(timeout=5)

    assert recording.shape == (rate, 1)
    assert _rms(recording) > 3000, "the fed tone did not reach the default input"
    assert abs(_dominant_frequency(recording, rate) - 440) < 5


def test_default_output_reaches_speaker_monitor(pulse: HeadlessPulse, sd: types.ModuleType) -> None:
    play_rate, capture_rate = 48000, 16000
    t = np.arange(play_rate) / play_rate
    tone = (0.5 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)

    with pulse.record_speaker(rate=capture_rate) as recorder:
        sd.play(tone, play_rate, blocking=True)
    heard = np.frombuffer(recorder.pcm, dtype=np.int16)
    assert len(heard) >= capture_rate * 0.9, "speaker.monitor recorded less than the playback time"
    assert _rms(heard) > 3000, "the played tone did not reach speaker.monitor"
    assert abs(_dominant_frequency(heard, capture_rate) - 660) < 5


def test_stop_leaves_no_processes_or_files(pulse: HeadlessPulse) -> None:
    # A second, nested harness: stop() must also hand PULSE_SERVER back to the outer one.
    outer_server = os.environ["PULSE_SERVER"]
    inner = HeadlessPulse().start()
    inner.feed_mic(sine_pcm(440, 5.0))
    pids, directory = inner.pids(), inner.directory
    assert len(pids) == 4  # daemon, two keep-alive readers, one feeder

    inner.stop()

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not Path(directory).exists()
    assert os.environ["PULSE_SERVER"] == outer_server == pulse.server
