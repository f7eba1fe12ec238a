"""The bench's plush on a table: a headless PulseAudio (a microphone fed in real time, a speaker whose monitor is
listened to), the simulated paw board on a pseudo-terminal as the button, and the real device runtime between.

- `SpeakerProbe` records the speaker's monitor and tells when sound started (first audio *played*) or stopped
  (barge-in). Each sample's time comes from the sample clock: the stream's offset to `time.perf_counter` is the
  smallest (arrival time - samples so far / rate) over the reads around it, so a read that was late (a busy
  reader thread) does not make the sound look late. What this cannot see is PulseAudio's own latency between
  the sink and its monitor, which is part of what a listener would hear anyway.
- `PawBoard` is the firmware's protocol core built as a host program (hardware/firmware/test/paw_sim.c); the
  plush opens it through pyserial as it would /dev/ttyACM0. Its button is debounced (25 ms) as on the board.
- `Relay` hands the paw's button events to whichever plush variant is being measured, so one board and one
  microphone serve every variant, each running its own unchanged `Plush.run` loop.
- `TracedPlush` is the real `Plush`, noting when each state and text arrived; `NaivePlush` is the baseline:
  record everything, transcribe after release, wait for the whole reply, synthesize it all, then play.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from harness import REPO

from plush.device.audio_io import Recorder
from plush.device.client import CompanionClient
from plush.device.controls import ButtonEvent
from plush.device.controls.serial_paw import SerialPaw
from plush.device.playback import AudioSink, SpeakerSink
from plush.device.runtime import Plush, State, TurnResult
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.stt import Transcriber
from plush.voice_models.tts import Synthesizer

FIRMWARE = REPO / "hardware" / "firmware"
PROBE_RATE = 16000
SOUND_LEVEL = 64
"""A sample above this (of 32767) is sound: the null sink's silence is exact zeros, speech peaks in thousands."""


class SpeakerProbe:
    """`parec` on the speaker's monitor, timed by its sample clock (see the module docstring).

    All the work is in its reader thread, a read at a time: the plush under test runs on the benchmark's event
    loop, and a probe that scanned its recording there would hold up the very turn it measures.
    """

    def __init__(self, env: dict[str, str], latency_ms: int = 20, keep_s: float = 30.0) -> None:
        self._proc = subprocess.Popen(
            ["parec", "--device=speaker.monitor", "--format=s16le", f"--rate={PROBE_RATE}", "--channels=1",
             f"--latency-msec={latency_ms}", "--raw"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._reads: deque[tuple[float, float, float | None]] = deque()
        """Per read: (time of its first sample, of its last, of its last loud sample or None); `keep_s` of them."""
        self._offsets: deque[float] = deque(maxlen=100)
        self._keep_s = keep_s
        self._samples = 0
        self._armed: float | None = None
        self._found: float | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="speaker-probe", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        fd, spare = self._proc.stdout.fileno(), b""
        while data := os.read(fd, 8192):
            now = time.perf_counter()
            data, spare = spare + data, b""
            if len(data) % 2:
                data, spare = data[:-1], data[-1:]
            samples = np.frombuffer(data, np.int16)
            start = self._samples
            self._samples += len(samples)
            self._offsets.append(now - self._samples / PROBE_RATE)
            offset = min(self._offsets)  # the least-delayed recent read: the sample clock's place in time
            loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SOUND_LEVEL)
            first_t = offset + start / PROBE_RATE
            last_t = offset + (self._samples - 1) / PROBE_RATE
            with self._lock:
                self._reads.append((first_t, last_t, offset + (start + loud[-1]) / PROBE_RATE if len(loud) else None))
                while self._reads and self._reads[0][1] < last_t - self._keep_s:
                    self._reads.popleft()
                if self._armed is not None and self._found is None and len(loud):
                    times = offset + (start + loud) / PROBE_RATE
                    after = times[times >= self._armed]
                    if len(after):
                        self._found = float(after[0])

    def last_sound(self, since: float, until: float) -> float | None:
        """When the last read with sound between `since` and `until` had its last loud sample (None: silent).
        The reads are ~20 ms long, so this is the end of the sound to within one read's gaps."""
        with self._lock:
            reads = list(self._reads)
        return max((loud for _, _, loud in reads if loud is not None and since <= loud <= until), default=None)

    def heard_until(self) -> float:
        """The time of the newest sample read so far."""
        with self._lock:
            return self._reads[-1][1] if self._reads else 0.0

    async def wait_sound(self, since: float, timeout_s: float) -> float | None:
        """When sound first played after `since` (perf_counter seconds); None if none within `timeout_s`."""
        with self._lock:
            self._armed, self._found = since, None
        deadline = time.perf_counter() + timeout_s
        try:
            while time.perf_counter() < deadline:
                if self._found is not None:
                    return self._found
                await asyncio.sleep(0.01)
            return None
        finally:
            with self._lock:
                self._armed = None

    async def wait_heard(self, until: float, timeout_s: float = 5.0) -> None:
        """Until the probe has read the speaker up to `until` (its reads lag the speaker by a few ms)."""
        deadline = time.perf_counter() + timeout_s
        while self.heard_until() < until and time.perf_counter() < deadline:  # noqa: ASYNC110 - a thread's reads
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=5)
        self._thread.join(timeout=5)


def build_paw_simulator() -> Path:
    result = subprocess.run(["make", "-C", str(FIRMWARE), "sim"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"building the paw board simulator failed:\n{result.stdout}{result.stderr}")
    return FIRMWARE / "build" / "paw_sim"


class PawBoard:
    """The simulated paw board on a pseudo-terminal; `press()`/`release()` move its button's raw contact."""

    def __init__(self, simulator: Path) -> None:
        board_end, self._host_end = os.openpty()
        self.process = subprocess.Popen(
            [str(simulator), str(board_end)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            pass_fds=(board_end,),
        )
        os.close(board_end)
        self.port = os.ttyname(self._host_end)

    def _do(self, command: str) -> float:
        """Send a command to the board; returns when it was sent (perf_counter)."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return time.perf_counter()

    def press(self) -> float:
        return self._do("press")

    def release(self) -> float:
        return self._do("release")

    def close(self) -> None:
        if self.process.poll() is None:
            self._do("quit")
            self.process.wait(timeout=5)
        os.close(self._host_end)


class Relay:
    """The paw's button events, routed to the variant being measured (each has its own `events()` stream)."""

    def __init__(self, paw: SerialPaw) -> None:
        self.paw = paw
        self.active = ""
        self.log: list[tuple[ButtonEvent, float]] = []
        """Each button event and when it reached the plush (perf_counter)."""
        self._queues: dict[str, asyncio.Queue[ButtonEvent]] = {}
        self._task = asyncio.create_task(self._route())

    def events(self, name: str) -> AsyncIterator[ButtonEvent]:
        queue: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        self._queues[name] = queue

        async def stream() -> AsyncIterator[ButtonEvent]:
            while (event := await queue.get()) is not ButtonEvent.QUIT:
                yield event
            yield event

        return stream()

    async def _route(self) -> None:
        async for event in self.paw.events():
            self.log.append((event, time.perf_counter()))
            if event is ButtonEvent.QUIT:
                break
            if self.active in self._queues:
                self._queues[self.active].put_nowait(event)
        for queue in self._queues.values():
            queue.put_nowait(ButtonEvent.QUIT)

    def reached(self, event: ButtonEvent, since: float) -> float:
        """When the first `event` after `since` reached the plush (0: none yet)."""
        return next((t for e, t in self.log if e is event and t >= since), 0.0)

    async def close(self) -> None:
        await self.paw.aclose()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class TurnTrace:
    """What one variant's plush did, and when (perf_counter seconds), for the turn being measured."""

    states: list[tuple[State, float]] = field(default_factory=list)
    heard_at: float = 0.0
    heard: str = ""
    first_text_at: float = 0.0
    result: TurnResult | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def at(self, state: State) -> float:
        return next((t for s, t in self.states if s is state), 0.0)


class TracedPlush(Plush):
    """The real device runtime; it notes when each state and text arrives and keeps each turn's result."""

    def __init__(self, *args: Any, lights: Callable[[str], None] = lambda state: None, **kwargs: Any) -> None:
        super().__init__(*args, on_state=self._note_state, on_text=self._note_text, **kwargs)
        self.trace = TurnTrace()
        self._lights = lights

    def _note_state(self, state: State) -> None:
        self.trace.states.append((state, time.perf_counter()))
        self._lights(state.value)  # the paw's LEDs, as `plush device` shows them

    def _note_text(self, kind: str, text: str) -> None:
        if kind == "heard" and not self.trace.heard_at:
            self.trace.heard_at, self.trace.heard = time.perf_counter(), text
        elif kind == "reply" and not self.trace.first_text_at:
            self.trace.first_text_at = time.perf_counter()

    async def take_turn(self, pcm: bytes, sink: AudioSink, listening: Any = None) -> TurnResult:
        try:
            result = await super().take_turn(pcm, sink, listening)
        except BaseException:
            self.trace.done.set()
            raise
        self.trace.result = result
        self.trace.done.set()
        return result


class NaivePlush:
    """The baseline: the same button, microphone, server and speaker, none of the streaming. It records the
    whole utterance, transcribes it after release, asks the server for the whole reply (text, over gRPC),
    synthesizes all of it (Piper, in this process: the same two cores the server would use), then plays it."""

    def __init__(self, client: CompanionClient, transcriber: Transcriber, voice: Synthesizer) -> None:
        self.client, self.transcriber, self.voice = client, transcriber, voice
        self.trace = TurnTrace()
        self.sample_rate = 16000

    async def run(
        self, buttons: AsyncIterator[ButtonEvent], recorder: Recorder, make_sink: Callable[[], AudioSink]
    ) -> None:
        async for event in buttons:
            if event is ButtonEvent.QUIT:
                return
            if event is ButtonEvent.DOWN:
                await asyncio.to_thread(recorder.start)
                self.trace.states.append((State.LISTENING, time.perf_counter()))
            elif event is ButtonEvent.UP:
                pcm = await asyncio.to_thread(recorder.stop)
                self.sample_rate = recorder.sample_rate
                self.trace.states.append((State.THINKING, time.perf_counter()))
                try:
                    await self._answer(pcm, make_sink())
                finally:
                    self.trace.states.append((State.IDLE, time.perf_counter()))
                    self.trace.done.set()

    async def _answer(self, pcm: bytes, sink: AudioSink) -> None:
        audio = pcm16_to_float(resample_pcm16(pcm, self.sample_rate, WHISPER_RATE))
        heard = await asyncio.to_thread(self.transcriber.transcribe, audio)
        self.trace.heard_at, self.trace.heard = time.perf_counter(), heard.text
        reply = ""
        async for event in self.client.chat(heard.text, want_audio=False):
            if event.WhichOneof("kind") == "text_delta":
                if not reply:
                    self.trace.first_text_at = time.perf_counter()
                reply += event.text_delta.text
        speech = await asyncio.to_thread(self.voice.synthesize, reply.strip())
        self.trace.states.append((State.SPEAKING, time.perf_counter()))
        await asyncio.to_thread(sink.write, speech, self.voice.sample_rate)
        await asyncio.to_thread(sink.finish)
        self.trace.result = TurnResult(transcript=heard.text, reply=reply, stt_after_release_ms=heard.elapsed_s * 1000)


Variant = TracedPlush | NaivePlush


class Rig:
    """PulseAudio, the speaker probe, the paw board and the relay, set up once for every variant of a run.

    `add(name, plush)` starts a variant's own turn loop (its own recorder, a new speaker sink per reply);
    `speak(...)` is one turn as a person takes it: press, speak the question, release, hear the answer.
    """

    def __init__(self, prebuffer_ms: int = 80) -> None:
        self.prebuffer_ms = prebuffer_ms
        self._loops: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Rig:
        from fakes.pulse import HeadlessPulse

        self.pulse = HeadlessPulse().start()
        self.probe = SpeakerProbe(self.pulse.env)
        self.board = PawBoard(await asyncio.to_thread(build_paw_simulator))
        await asyncio.sleep(0.2)  # the board boots before it answers HELLO? (a first try would be a warning)
        paw = SerialPaw(self.board.port)
        await paw.start(timeout_s=5)
        self.paw = paw
        self.relay = Relay(paw)
        await asyncio.sleep(1.0)  # PulseAudio's monitors need a moment before the first recording
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.relay.close()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self.probe.stop()
        self.board.close()
        self.pulse.stop()

    def add(self, name: str, plush: Variant) -> None:
        def speaker() -> AudioSink:
            return SpeakerSink(None, self.prebuffer_ms)

        recorder = Recorder(16000, None, 30.0)
        self._loops.append(asyncio.create_task(plush.run(self.relay.events(name), recorder, speaker)))

    async def wait_state(self, plush: Variant, state: State, since: float, timeout_s: float) -> float:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if found := next((t for s, t in plush.trace.states if s is state and t >= since), 0.0):
                return found
            await asyncio.sleep(0.01)
        raise TimeoutError(f"the plush did not get to {state.value} within {timeout_s:g} s")

    async def speak(self, name: str, plush: Variant, question: bytes, release_after_s: float) -> tuple[float, float]:
        """Press, speak `question` into the microphone in real time, release `release_after_s` after its end.
        Returns (release time, first audio played) in perf_counter seconds; waits for nothing after that."""
        self.relay.active = name
        plush.trace = TurnTrace()
        pressed = self.board.press()
        await self.wait_state(plush, State.LISTENING, pressed, 5)
        feeder = self.pulse.feed_mic(question)
        await asyncio.to_thread(feeder.wait)
        await asyncio.sleep(release_after_s)
        released = self.board.release()
        played = await self.probe.wait_sound(released, 60)
        if played is None:
            trace = plush.trace
            result = trace.result
            raise TimeoutError(
                f"{name}: no reply was heard within 60 s of the release; the plush went through "
                f"{[s.value for s, _ in trace.states]}, heard {trace.heard!r}, errors {result and result.errors}"
            )
        return released, played
