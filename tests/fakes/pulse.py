"""A headless PulseAudio server with virtual speaker and microphone, for real ``sounddevice`` tests.

Why: Plush's audio loop (microphone capture, playback, barge-in) runs through PortAudio, and mocking
``sounddevice`` would hide exactly the bugs that matter there (wrong sample rates, blocking calls,
buffer sizes, device selection). CI machines have no sound card, PortAudio alone lists no devices,
and the ALSA ``null`` plugin does not pace audio in real time. A private PulseAudio daemon with two
null sinks gives real-time, paced devices that any user (root included) can run:

* ``speaker``: the default sink. Whatever Plush plays can be recorded from ``speaker.monitor``.
* ``micfeed``: a sink the test writes into; its monitor, ``micfeed.monitor``, is the default
  source, so Plush's microphone hears whatever the test feeds.

Debian's ALSA configuration routes ALSA's ``default``/``pulse`` devices to PulseAudio when
``PULSE_SERVER`` points at a running server, so PortAudio (and thus ``sounddevice``) sees them.

Debian packages needed: ``pulseaudio pulseaudio-utils libasound2-plugins libportaudio2``.

Usage::

    with HeadlessPulse() as pulse:       # sets PULSE_SERVER, re-scans sounddevice's devices
        pulse.feed_mic(sine_pcm(440, 2.0))
        audio = sd.rec(16000, samplerate=16000, channels=1, dtype="int16", blocking=True)
        with pulse.record_speaker() as rec:
            sd.play(tone, 48000, blocking=True)
        heard = rec.samples()
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "PULSE_BINARIES",
    "HeadlessPulse",
    "PulseRecorder",
    "pulse_available",
    "reinit_portaudio",
    "sine_pcm",
]

PULSE_BINARIES: tuple[str, ...] = ("pulseaudio", "pacat", "parec", "pactl")
"""Executables the harness runs; all come from ``pulseaudio`` and ``pulseaudio-utils``."""

_MIC_KEEPALIVE_MSEC = 10
_SPEAKER_KEEPALIVE_MSEC = 100


def pulse_available() -> bool:
    """Whether this machine can run :class:`HeadlessPulse` (binaries plus PortAudio's library).

    Tests use it to skip with a clear reason instead of failing on machines without audio packages.
    """
    if any(shutil.which(name) is None for name in PULSE_BINARIES):
        return False
    try:
        import sounddevice  # noqa: F401 - importing proves libportaudio2 is loadable
    except OSError:
        return False
    return True


def missing_binaries() -> list[str]:
    """Names from :data:`PULSE_BINARIES` that are not on PATH (for skip messages)."""
    return [name for name in PULSE_BINARIES if shutil.which(name) is None]


def reinit_portaudio() -> None:
    """Make an already-imported ``sounddevice`` re-scan its devices.

    PortAudio enumerates devices once, in ``Pa_Initialize`` (run at ``import sounddevice``), and
    ALSA's pulse plugin only appears when ``PULSE_SERVER`` reached a live server at that moment.
    Terminating and re-initialising PortAudio (which also drops ALSA's cached configuration) makes
    the pulse devices appear after the server starts, and disappear after it stops. Any stream that
    is still open is invalidated, so call this only between tests.
    """
    if "sounddevice" not in sys.modules:
        return  # not imported yet: its first import will scan with the current environment
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()


def sine_pcm(
    frequency: float, seconds: float, rate: int = 16000, *, amplitude: float = 0.5, channels: int = 1
) -> bytes:
    """Signed 16-bit little-endian PCM of a sine tone, the format :meth:`HeadlessPulse.feed_mic` takes.

    Pure standard library so the harness works without numpy.
    """
    count = round(seconds * rate)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / rate
    samples = array("h", (round(peak * math.sin(step * i)) for i in range(count) for _ in range(channels)))
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


class PulseRecorder:
    """Records one PulseAudio source (e.g. ``speaker.monitor``) in the background via ``parec``.

    A context manager: recording starts on construction and stops on exit (or :meth:`stop`); the
    bytes are then in :attr:`pcm`. A reader thread drains ``parec`` continuously, because a pipe
    that fills up would stall the recording and shift it in time.
    """

    def __init__(
        self,
        env: dict[str, str],
        device: str,
        rate: int = 16000,
        channels: int = 1,
        latency_msec: int = _SPEAKER_KEEPALIVE_MSEC,
    ) -> None:
        """Start ``parec`` on ``device`` producing s16le at ``rate``/``channels``."""
        self.device = device
        self.rate = rate
        self.channels = channels
        self._chunks: list[bytes] = []
        self._received = 0
        self._store = True
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [
                "parec",
                f"--device={device}",
                "--format=s16le",
                f"--rate={rate}",
                f"--channels={channels}",
                f"--latency-msec={latency_msec}",
                "--raw",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # parec is quiet unless it fails; read for error messages
        )
        self._thread = threading.Thread(target=self._drain, name=f"parec-{device}", daemon=True)
        self._thread.start()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The underlying ``parec`` process."""
        return self._proc

    def _drain(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        while data := os.read(stream.fileno(), 65536):
            with self._lock:
                self._received += len(data)
                if self._store:
                    self._chunks.append(data)

    def discard(self) -> None:
        """Drop what was recorded and keep draining without storing (for keep-alive readers)."""
        with self._lock:
            self._store = False
            self._chunks.clear()

    @property
    def received(self) -> int:
        """Bytes read from ``parec`` so far, stored or not."""
        with self._lock:
            return self._received

    @property
    def pcm(self) -> bytes:
        """Everything recorded so far (s16le, interleaved)."""
        with self._lock:
            return b"".join(self._chunks)

    def samples(self) -> array[int]:
        """The recording as signed 16-bit samples (interleaved when ``channels > 1``)."""
        data = self.pcm
        samples = array("h", data[: len(data) - len(data) % 2])
        if sys.byteorder != "little":
            samples.byteswap()
        return samples

    def wait_for_bytes(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` bytes arrived: proof that the source is really flowing."""
        deadline = time.monotonic() + timeout
        while self.received < count:
            if self._proc.poll() is not None:
                raise RuntimeError(f"parec on {self.device} exited with code {self._proc.returncode}: {self._stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no audio from {self.device} within {timeout} s")
            time.sleep(0.01)

    def _stderr(self) -> str:
        if self._proc.stderr is None or self._proc.poll() is None:
            return ""
        return self._proc.stderr.read().decode(errors="replace").strip()

    def stop(self) -> bytes:
        """Stop ``parec`` and return everything it recorded."""
        _terminate(self._proc)
        self._thread.join(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        return self.pcm

    def __enter__(self) -> PulseRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class HeadlessPulse:
    """A private PulseAudio daemon with a ``speaker`` and a ``micfeed`` null sink; see module doc.

    While running it sets ``PULSE_SERVER`` in ``os.environ`` (restored on stop) so this process's
    PortAudio and every child process use it, and re-scans ``sounddevice`` devices on start and
    stop. Everything (socket, state, logs) lives in a temporary directory that stop() removes.
    """

    def __init__(
        self,
        *,
        mic_rate: int = 16000,
        speaker_rate: int = 48000,
        keep_alive: bool = True,
        startup_timeout: float = 10.0,
    ) -> None:
        """Configure, without starting; ``mic_rate``/``speaker_rate`` are the sinks' native rates.

        ``keep_alive`` runs low-latency ``parec`` readers on both monitors: without them a
        null sink's monitor delivers audio in ~2 s bursts, which makes recordings late and choppy.
        """
        self.mic_rate = mic_rate
        self.speaker_rate = speaker_rate
        self._keep_alive = keep_alive
        self._startup_timeout = startup_timeout
        self._tmp: Path | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._keepalives: list[PulseRecorder] = []
        self._feeders: list[subprocess.Popen[bytes]] = []
        self._saved_env: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self._daemon is not None and self._daemon.poll() is None

    def pids(self) -> list[int]:
        """Process ids of every child the harness started (daemon, readers, feeders), live or not.

        Lets tests prove that stop() leaves nothing behind.
        """
        procs: list[subprocess.Popen[bytes]] = [*self._feeders, *(r.process for r in self._keepalives)]
        if self._daemon is not None:
            procs.insert(0, self._daemon)
        return [proc.pid for proc in procs]

    @property
    def directory(self) -> Path:
        """The temporary directory holding the socket, config and ``pulseaudio.log``."""
        if self._tmp is None:
            raise RuntimeError("HeadlessPulse is not running")
        return self._tmp

    @property
    def server(self) -> str:
        """The ``PULSE_SERVER`` value clients use: ``unix:<dir>/native``."""
        return f"unix:{self.directory / 'native'}"

    @property
    def env(self) -> dict[str, str]:
        """An environment for child processes (a copy of ours plus ``PULSE_SERVER``)."""
        return {**os.environ, "PULSE_SERVER": self.server}

    def start(self) -> HeadlessPulse:
        """Start the daemon, wait until both monitors deliver audio, then re-scan PortAudio.

        Raises RuntimeError (with the daemon's log) when PulseAudio fails to come up.
        """
        if self._daemon is not None:
            return self
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"PulseAudio tools missing: {', '.join(missing)}")
        self._tmp = Path(tempfile.mkdtemp(prefix="plush-pulse-"))
        try:
            self._spawn_daemon()
            self._wait_ready()
            self._saved_env = os.environ.get("PULSE_SERVER")
            os.environ["PULSE_SERVER"] = self.server
            if self._keep_alive:
                self._keepalives = [
                    PulseRecorder(self.env, "micfeed.monitor", self.mic_rate, 1, _MIC_KEEPALIVE_MSEC),
                    PulseRecorder(self.env, "speaker.monitor", self.speaker_rate, 2, _SPEAKER_KEEPALIVE_MSEC),
                ]
                self._wait_for_source_outputs(len(self._keepalives))
                self.pactl("suspend-sink", "speaker", "0")
                self.pactl("suspend-sink", "micfeed", "0")
                for recorder in self._keepalives:
                    recorder.wait_for_bytes(1024, timeout=self._startup_timeout)
                    recorder.discard()
            reinit_portaudio()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop feeders, keep-alive readers and the daemon; restore the environment; clean up.

        Children get SIGTERM and, if they linger, SIGKILL, so no process outlives the harness.
        """
        for proc in self._feeders:
            _terminate(proc)
        self._feeders.clear()
        for recorder in self._keepalives:
            recorder.stop()
        self._keepalives.clear()
        if self._daemon is not None:
            _terminate(self._daemon)
            self._daemon = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if os.environ.get("PULSE_SERVER") == (f"unix:{self._tmp / 'native'}" if self._tmp else None):
            if self._saved_env is None:
                os.environ.pop("PULSE_SERVER", None)
            else:
                os.environ["PULSE_SERVER"] = self._saved_env
            reinit_portaudio()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> HeadlessPulse:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- audio helpers --------------------------------------------------------------------------

    def feed_mic(self, pcm: bytes, rate: int = 16000, channels: int = 1) -> subprocess.Popen[bytes]:
        """Play s16le ``pcm`` into ``micfeed`` so the default input (its monitor) hears it.

        Returns at once with the ``pacat`` process; ``.wait()`` on it to block until the audio has
        been played (real time). Unfinished feeds are killed on stop().
        """
        path = self.directory / f"feed-{len(self._feeders)}-{time.monotonic_ns()}.raw"
        path.write_bytes(pcm)
        with path.open("rb") as source:
            proc = subprocess.Popen(
                [
                    "pacat",
                    "--playback",
                    "--device=micfeed",
                    "--format=s16le",
                    f"--rate={rate}",
                    f"--channels={channels}",
                    "--latency-msec=20",
                    "--raw",
                ],
                env=self.env,
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._feeders.append(proc)
        return proc

    def record(self, device: str, rate: int = 16000, channels: int = 1) -> PulseRecorder:
        """Record any source (``speaker.monitor``, ``micfeed.monitor``) in the background.

        Returns once audio is flowing: ``parec`` connects asynchronously, and without this wait
        the first ~50 ms of whatever the test plays next would be missing from the recording.
        """
        recorder = PulseRecorder(self.env, device, rate, channels)
        try:
            recorder.wait_for_bytes(2 * channels, timeout=self._startup_timeout)
        except (RuntimeError, TimeoutError) as error:
            recorder.stop()
            raise RuntimeError(f"{error}\n{self.diagnose()}") from error
        except BaseException:
            recorder.stop()
            raise
        return recorder

    def record_speaker(self, rate: int = 16000, channels: int = 1) -> PulseRecorder:
        """Record what is played to the default output, until the recorder is stopped."""
        return self.record("speaker.monitor", rate, channels)

    def capture_speaker(self, seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
        """Record ``seconds`` of the speaker (blocking); for playback happening in another thread."""
        with self.record_speaker(rate, channels) as recorder:
            recorder.wait_for_bytes(round(seconds * rate) * channels * 2, timeout=seconds + 10)
        return recorder.pcm[: round(seconds * rate) * channels * 2]

    def pactl(self, *args: str) -> str:
        """Run ``pactl`` against this server (e.g. ``pactl("list", "short", "sinks")``)."""
        result = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=True, timeout=10)
        return result.stdout

    # -- internals ------------------------------------------------------------------------------

    def _spawn_daemon(self) -> None:
        tmp = self.directory
        config = tmp / "default.pa"
        config.write_text(
            "\n".join(
                [
                    f"load-module module-native-protocol-unix auth-anonymous=1 auth-cookie-enabled=0"
                    f" socket={tmp / 'native'}",
                    f"load-module module-null-sink sink_name=speaker rate={self.speaker_rate} channels=2"
                    " sink_properties=device.description=Speaker",
                    f"load-module module-null-sink sink_name=micfeed rate={self.mic_rate} channels=1"
                    " sink_properties=device.description=MicFeed",
                    "set-default-sink speaker",
                    "set-default-source micfeed.monitor",
                    "suspend-sink speaker 1",
                    "suspend-sink micfeed 1",
                    "",
                ]
            )
        )
        # A private HOME/XDG tree keeps the daemon away from the user's real Pulse state and
        # cookies; an empty D-Bus address stops it from trying to reach a session bus.
        env = {
            **os.environ,
            "HOME": str(tmp),
            "XDG_RUNTIME_DIR": str(tmp / "runtime"),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "XDG_STATE_HOME": str(tmp / "state"),
            "PULSE_RUNTIME_PATH": str(tmp / "runtime"),
            "PULSE_STATE_PATH": str(tmp / "state"),
            "DBUS_SESSION_BUS_ADDRESS": "disabled:",
        }
        env.pop("PULSE_SERVER", None)
        (tmp / "runtime").mkdir(mode=0o700)
        self._log = (tmp / "pulseaudio.log").open("wb")
        self._daemon = subprocess.Popen(
            [
                "pulseaudio",
                "-n",  # no default.pa from /etc: only our config
                "-F",
                str(config),
                "--exit-idle-time=-1",
                "--daemonize=no",
                "--use-pid-file=no",  # allows several harnesses (xdist workers) side by side
                "--disallow-exit",
                # Audio over the socket, not shared memory: PulseAudio 16's memfd import path aborts now and then
                # under load ("Cannot send block reference with non-registered memfd", then an assertion in
                # memblock_replace_import; pulseaudio#824), which killed a CI run's speaker test.
                "--disable-shm=yes",
                "--enable-memfd=no",
                "--log-target=stderr",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test runner must not kill it mid-teardown
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        socket_path = self.directory / "native"
        while True:
            assert self._daemon is not None
            if self._daemon.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with code {self._daemon.returncode}:\n{self._read_log()}")
            if socket_path.exists():
                probe = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, check=False, timeout=10)
                if probe.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio not ready after {self._startup_timeout} s:\n{self._read_log()}")
            time.sleep(0.05)

    def _wait_for_source_outputs(self, count: int) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while len(self.pactl("list", "short", "source-outputs").splitlines()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"keep-alive readers did not connect:\n{self._read_log()}")
            time.sleep(0.02)

    def diagnose(self) -> str:
        """The daemon's state and the tail of its log, for failure messages."""
        if self._daemon is None:
            return "pulseaudio: not started"
        code = self._daemon.poll()
        state = "running" if code is None else f"exited with code {code}"
        return f"pulseaudio {state}; log tail:\n{self._read_log()[-4000:]}"

    def _read_log(self) -> str:
        try:
            return (self.directory / "pulseaudio.log").read_text(errors="replace")
        except OSError:
            return "<no log>"


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps the child so no zombie is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
