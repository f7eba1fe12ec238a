"""`plush voice record` through the real microphone path: sounddevice -> PortAudio -> a headless PulseAudio whose
virtual mic hears the real joe voice reading the prompts. The session loop is driven by a scripted owner (the
same loop the terminal UI drives), and once through the real command in a terminal-less subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from fakes.pulse import HeadlessPulse

from plush.voice_models.audio import WHISPER_RATE, FloatAudio, float_to_pcm16, pcm16_to_float, read_wav
from plush.voice_models.cloning.audio_checks import TakeCheck, check_take
from plush.voice_models.cloning.dataset import prepare
from plush.voice_models.cloning.microphone import RECORD_RATE, Microphone
from plush.voice_models.cloning.prompts import Prompt
from plush.voice_models.cloning.recording import Action, RecordingSession, TakeChecker, run_session
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer
from plush.voice_models.vad import SileroVad

pytestmark = pytest.mark.real_weights

PROMPTS = [
    Prompt("en-0001", "The owl hooted twice from the old tree."),
    Prompt("en-0002", "Would you like pancakes for lunch?"),
    Prompt("en-0003", "Please put your shoes by the door."),
]


@pytest.fixture(scope="module")
def joe(real_joe_voice: Path) -> Synthesizer:
    return Synthesizer(real_joe_voice)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def said(joe: Synthesizer) -> dict[str, bytes]:
    """Each prompt in joe's voice as the virtual mic takes it: 16 kHz s16le."""
    import soxr

    return {
        p.id: float_to_pcm16(soxr.resample(pcm16_to_float(joe.synthesize(p.text)), joe.sample_rate, WHISPER_RATE))
        for p in PROMPTS
    }


class ScriptedOwner:
    """Plays the owner: for each take, says something into the mic (or skips, quits, presses Ctrl+C) and then
    keeps or redoes it. `script` is a list of (what to say, what to do after the checks)."""

    def __init__(self, pulse: HeadlessPulse, script: list[tuple[Any, str]]) -> None:
        self.pulse = pulse
        self.script = list(script)
        self.shown: list[tuple[str, int]] = []
        self.checks: list[TakeCheck] = []
        self._step: tuple[Any, str] = (None, "")

    def show_prompt(self, prompt: Prompt, position: int, total: int, attempt: int) -> None:
        self.shown.append((prompt.id, attempt))

    def wait_to_start(self) -> Action:
        self._step = self.script.pop(0)
        return {"skip": Action.SKIP, "quit": Action.QUIT}.get(self._step[0], Action.START)

    def wait_to_stop(self, microphone: Microphone) -> None:
        words, _ = self._step
        deadline = time.monotonic() + 5
        while microphone.seconds < 0.3 and time.monotonic() < deadline:  # the stream is flowing
            time.sleep(0.02)
        if words == "ctrl+c":
            raise KeyboardInterrupt
        self.pulse.feed_mic(words).wait(timeout=20)
        time.sleep(0.3)  # the tail of the audio through PulseAudio, then the owner presses Enter

    def review(self, prompt: Prompt, check: TakeCheck, audio: FloatAudio, rate: int) -> Action:
        self.checks.append(check)
        return {"keep": Action.KEEP, "redo": Action.REDO}[self._step[1]]


@pytest.fixture(scope="module")
def checker(real_whisper_base: Path, vad: SileroVad) -> TakeChecker:
    """Every check of a take, the words heard by the real Whisper base."""
    return TakeChecker(vad, "en", Transcriber(real_whisper_base, options=SttOptions(encoder_window="fit")))


@pytest.fixture
def microphone(pulse: HeadlessPulse) -> Iterator[Microphone]:
    mic = Microphone(sample_rate=RECORD_RATE)
    yield mic
    mic.stop()


def test_a_session_records_checks_redoes_a_wrong_take_and_resumes_after_ctrl_c(
    pulse: HeadlessPulse,
    microphone: Microphone,
    said: dict[str, bytes],
    checker: TakeChecker,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "session"
    session = RecordingSession.open(folder, language="en", prompts=PROMPTS, sample_rate=RECORD_RATE)
    owner = ScriptedOwner(
        pulse,
        [
            (said["en-0001"], "keep"),
            (said["en-0003"], "redo"),  # read the wrong line: the words check says so
            (said["en-0002"], "keep"),
            ("ctrl+c", ""),
        ],
    )

    summary = run_session(session, owner, microphone, checker)

    assert owner.shown == [("en-0001", 1), ("en-0002", 1), ("en-0002", 2), ("en-0003", 1)]
    first, wrong, second = owner.checks
    assert first.ok and second.ok, (first, second)
    assert first.cer is not None and first.heard  # the words were heard and matched (CER within 0.25)
    assert any("did not match" in problem for problem in wrong.problems)
    assert (summary.kept, summary.redone, summary.interrupted, summary.remaining) == (2, 1, True, 1)
    state = json.loads((folder / "session.json").read_text(encoding="utf-8"))
    assert sorted(state["takes"]) == ["en-0001", "en-0002"]
    for take in state["takes"].values():
        pcm, rate = read_wav(folder / take["file"])
        assert rate == RECORD_RATE
        recorded = len(pcm) / 2 / rate
        assert recorded == pytest.approx(take["seconds"], abs=0.01)
        assert 1.2 < recorded < 4.5  # trimmed to the speech, not the whole time the mic was open

    resumed = RecordingSession.open(folder, language="en", prompts=PROMPTS, sample_rate=RECORD_RATE)
    again = ScriptedOwner(pulse, [("skip", "")])
    assert run_session(resumed, again, microphone, checker).remaining == 0
    assert again.shown == [("en-0003", 1)]  # goes on where it stopped
    assert resumed.skipped == ["en-0003"]

    report = prepare([folder], tmp_path / "dataset")
    metadata = (tmp_path / "dataset" / "metadata.csv").read_text(encoding="utf-8")
    assert metadata == f"en-0001|{PROMPTS[0].text}\nen-0002|{PROMPTS[1].text}\n"
    assert report["clips"] == 2 and report["rejected"] == []


def test_take_checks_flag_quiet_clipped_noisy_and_empty_takes(joe: Synthesizer, vad: SileroVad) -> None:
    speech = pcm16_to_float(joe.synthesize(PROMPTS[0].text))
    rate = joe.sample_rate
    pad = np.zeros(rate // 2, dtype=np.float32)
    take = np.concatenate([pad, speech, pad])
    noise = np.random.default_rng(7).normal(0, 0.03, len(take)).astype(np.float32)
    loud = np.clip(take * 30, -1, 1).astype(np.float32)

    good = check_take(take, rate, vad)
    assert good.ok, good.problems
    assert good.trim[0] > 0 and good.trim[1] < len(take)  # silence trimmed off, speech kept
    assert good.seconds == pytest.approx(len(speech) / rate, abs=0.5)
    assert any("too quiet" in p for p in check_take((take * 0.01).astype(np.float32), rate, vad).problems)
    assert any("clipped" in p for p in check_take(loud, rate, vad).problems)
    assert any("noisy room" in p for p in check_take(take + noise, rate, vad).problems)
    assert check_take(pad, rate, vad).problems[0].startswith("no speech heard")


def test_plush_voice_record_runs_in_a_terminal_and_keeps_the_take(
    pulse: HeadlessPulse, said: dict[str, bytes], tmp_path: Path
) -> None:
    prompts = tmp_path / "mine.txt"
    prompts.write_text(f"# my sentences\n{PROMPTS[1].text}\n{PROMPTS[2].text}\n", encoding="utf-8")
    config = tmp_path / "plush.toml"
    config.write_text(tomli_w.dumps({"log_level": "WARNING"}), encoding="utf-8")
    folder = tmp_path / "session"
    command = [sys.executable, "-m", "plush", "voice", "record", str(folder), "--prompts", str(prompts)]
    proc = subprocess.Popen(
        [*command, "--count", "1", "--no-words-check", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen = _read_until(proc, b"Enter: record")
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    seen += _read_until(proc, b"then press Enter")
    time.sleep(0.5)
    pulse.feed_mic(said["en-0002"]).wait(timeout=20)
    time.sleep(0.4)
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    seen += _read_until(proc, b"Enter: keep")
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    rest, _ = proc.communicate(timeout=30)
    output = (seen + rest).decode()

    assert proc.returncode == 0, output
    assert "1 of 2" in output and PROMPTS[1].text in output and "good take" in output
    assert "kept 1" in output and "1 sentences left" in output
    state = json.loads((folder / "session.json").read_text(encoding="utf-8"))
    assert list(state["takes"]) == ["mine-0001"]
    assert state["takes"]["mine-0001"]["text"] == PROMPTS[1].text


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 30) -> bytes:
    """Output of `proc` up to and including `marker` (fails with what was seen after `timeout`)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} in:\n{seen.decode(errors='replace')}")
        seen += os.read(proc.stdout.fileno(), 4096)
    return seen
