"""The plush's turn loop: button down -> listen, button up -> transcribe and ask the server, play the reply.

States follow ARCHITECTURE.md (idle, listening, thinking, speaking, error) and are reported to an indicator
(the paw's LEDs, a terminal status line). Pressing the button while the plush speaks stops the reply at once,
cancels the turn on the server and starts listening again. A turn that fails shows ERROR for a moment, then IDLE,
and never leaves the speaker open. Nothing here blocks the event loop: audio devices, codecs and resamplers run
in worker threads (see playback.py), so the button and the lights answer while the plush speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from plush.config import DeviceConfig
from plush.device.audio_io import Recorder
from plush.device.client import CompanionClient, ConverseCall, ServerError, UnreachableError, predates_settled
from plush.device.controls import ButtonEvent
from plush.device.listening import AudioUplink, Listening, SettledUplink
from plush.device.offline import OfflinePhrases, reconnect
from plush.device.playback import AudioSink, ReplyAudio, SpeakerSink, WavSink
from plush.errors import PlushError
from plush.logs import get_logger
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.timing import PLUSH_PLAYBACK_WAIT_S
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16, scale_pcm16
from plush.voice_models.streaming_stt import StreamingStt, StreamingTranscription
from plush.voice_models.stt import Transcriber, TranscriptResult

__all__ = [  # the sinks live in playback.py; the turn loop's callers find them here too
    "ERROR_SHOWN_S",
    "AudioSink",
    "Plush",
    "SpeakerSink",
    "State",
    "TurnResult",
    "WavSink",
    "transcribes_on_device",
]

log = get_logger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OFFLINE = "offline"
    """The server cannot be reached; the plush looks for it in the background."""
    ERROR = "error"


ERROR_SHOWN_S: Final = 2.0
"""How long a failed turn shows ERROR before the plush is idle again (a press ends it sooner)."""


def transcribes_on_device(config: DeviceConfig) -> bool:
    """Where speech becomes text, decided here and nowhere else: on the plush (its own Whisper, fed while the
    button is held when it streams), or on the server (the audio goes there as it is recorded)."""
    return config.stt == "device"


@dataclass
class TurnResult:
    """What happened in one turn, as the plush saw it."""

    transcript: str = ""
    reply: str = ""
    backend: str = ""
    backend_reason: str = ""
    audio_chunks: int = 0
    audio_bytes: int = 0
    """Bytes of reply audio on the wire (Opus makes this about a tenth of PCM's)."""
    sample_rate: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    """The server's stage timings (ms)."""
    stt_after_release_ms: float | None = None
    """How long the plush's own STT took from release to text (streaming leaves only the tail)."""
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    event_kinds: list[str] = field(default_factory=list)
    """The kinds of events received, in order (transcript, text_delta, audio, timing, done ...)."""


ENCODINGS = {"pcm": pb.AUDIO_ENCODING_PCM_S16LE, "opus": pb.AUDIO_ENCODING_OPUS}


class Plush:
    """One plush: its settings, a server connection, and optionally its own Whisper (streaming or not)."""

    def __init__(
        self,
        config: DeviceConfig,
        client: CompanionClient,
        transcriber: Transcriber | None,
        *,
        streaming: StreamingStt | None = None,
        phrases: OfflinePhrases | None = None,
        on_state: Callable[[State], None] = lambda state: None,
        on_text: Callable[[str, str], None] = lambda kind, text: None,
        error_shown_s: float = ERROR_SHOWN_S,
    ) -> None:
        self.config = config
        self.client = client
        self.transcriber = transcriber
        self.streaming = streaming
        self.phrases = phrases
        self.error_shown_s = error_shown_s
        self._reconnecting: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        self._state: State | None = None
        self._error_over: asyncio.TimerHandle | None = None
        self.settled_refused = False
        """The server refused a turn that carried Settled (it is older than the message): ask at release only."""
        self._settled_turn: tuple[ConverseCall, str, str] | None = None
        self.on_state = on_state
        self.on_text = on_text

    @property
    def stt_on_device(self) -> bool:
        return transcribes_on_device(self.config)

    def _show(self, state: State) -> None:
        """The one way the state changes; a new state ends the ERROR moment early."""
        if self._error_over is not None:
            self._error_over.cancel()
            self._error_over = None
        self._state = state
        self.on_state(state)

    async def _hear(self, pcm: bytes, transcription: StreamingTranscription | None) -> TranscriptResult:
        """The utterance's text: from the streaming transcription when there is one, else decoded now."""
        if transcription is not None:
            return await transcription.finish_async()
        whisper_pcm = resample_pcm16(pcm, self.config.sample_rate, WHISPER_RATE)
        if self.streaming is not None:
            heard, _ = await asyncio.to_thread(self.streaming.transcribe_segmented, whisper_pcm)
            return heard
        if self.transcriber is None:
            raise PlushError("device.stt is 'device' but no speech model is loaded")
        return await asyncio.to_thread(self.transcriber.transcribe, pcm16_to_float(whisper_pcm))

    def _turn_start(self) -> pb.TurnStart:
        return pb.TurnStart(want_audio=True, output_encoding=ENCODINGS[self.config.audio_encoding])

    async def take_turn(self, pcm: bytes, sink: AudioSink, listening: Listening | None = None) -> TurnResult:
        """Send one recorded utterance (mono s16le at config.sample_rate) and play the reply into `sink`.

        `listening` is what already heard the utterance while it was recorded: the streaming STT, or the turn's
        stream to the server that already carried it (server-side STT). However the turn ends, the sink is done
        with on return: played out (or written) after a reply and after a failure (what arrived still plays),
        stopped at once when the turn is cancelled (barge-in).
        """
        self._show(State.THINKING)
        result = TurnResult()
        call: ConverseCall | None = None
        try:
            call = await self._ask(pcm, listening, result)
            if call is None:
                return result
            try:
                await self._receive(call, sink, result)
            except ServerError as exc:
                if (retry := self._without_settled(call, exc, result)) is None:
                    raise
                call = await retry
                await self._receive(call, sink, result)
            # Piper is faster than speech: most of the reply plays here, so a press now must stop it too.
            await asyncio.to_thread(sink.finish)
        except asyncio.CancelledError:
            result.interrupted = True
            await asyncio.to_thread(sink.stop_now)
            await self._drop(call, listening, "barge-in")
            raise
        except Exception:
            await self._drop(call, listening, "the plush failed")
            await self._in_sink(sink, sink.finish)
            raise
        return result

    async def _ask(self, pcm: bytes, listening: Listening | None, result: TurnResult) -> ConverseCall | None:
        """The turn's stream to the server, carrying the utterance as `stt_on_device` says: the plush's own
        transcript, or the audio (already sent while the button was held, else now). None: nothing was heard."""
        start = self._turn_start()
        if not self.stt_on_device:
            if listening is not None and listening.uplink is not None:
                return await listening.uplink.finish()
            return await self.client.converse(start, pcm=pcm, sample_rate=self.config.sample_rate)
        heard = await self._hear(pcm, listening.transcription if listening else None)
        result.stt_after_release_ms = round(heard.elapsed_s * 1000, 1)
        settled = listening.settled if listening else None
        if not heard.text:
            result.errors.append("no speech recognised")
            self.on_text("heard", "")
            if settled is not None:
                await settled.cancel("no speech")
            return None
        if settled is not None:
            if (call := await settled.finish(heard.text, heard.language)) is not None:
                self._settled_turn = (call, heard.text, heard.language)
                return call  # the turn the server may already be answering (it heard the settled text)
            self.settled_refused = self.settled_refused or settled.refused
        start.language = heard.language
        return await self.client.converse(start, transcript=heard.text)

    def _without_settled(
        self, call: ConverseCall, exc: ServerError, result: TurnResult
    ) -> Awaitable[ConverseCall] | None:
        """A server older than `Settled` refuses the turn that sent it, before answering anything: ask it again
        the old way, at once, and never send it Settled again. None: the refusal was about something else."""
        if self._settled_turn is None or self._settled_turn[0] is not call or result.event_kinds:
            return None
        if not predates_settled(exc):
            return None
        _, text, language = self._settled_turn
        self.settled_refused = True
        log.info("server_predates_settled", device_id=self.config.id, error=str(exc))
        start = self._turn_start()
        start.language = language
        return self.client.converse(start, transcript=text)

    async def _drop(self, call: ConverseCall | None, listening: Listening | None, reason: str) -> None:
        """The turn ends early: the server stops working on it, the utterance's STT stops."""
        if call is not None:
            await call.cancel(reason)
        elif listening is not None:
            await listening.cancel(reason)

    async def _in_sink(self, sink: AudioSink, work: Callable[[], None]) -> None:
        """Run blocking sink work in a thread after a failure: another failure there is logged, not raised (the
        first one is what the owner needs to hear about), and the sink is stopped so no stream stays open."""
        try:
            await asyncio.to_thread(work)
        except asyncio.CancelledError:
            await asyncio.to_thread(sink.stop_now)
            raise
        except Exception:
            log.exception("sink_failed", device_id=self.config.id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sink.stop_now)

    async def _receive(self, call: ConverseCall, sink: AudioSink, result: TurnResult) -> None:
        audio = ReplyAudio(sink, self.config.volume)
        loop = asyncio.get_running_loop()
        heard = asyncio.Event()

        def played() -> None:  # on the audio thread
            loop.call_soon_threadsafe(heard.set)

        sink.when_first_played(played)
        reporter = asyncio.create_task(_report_playback(call, heard))
        try:
            await self._read_events(call, audio, result, reporter)
        finally:
            reporter.cancel()

    async def _read_events(
        self, call: ConverseCall, audio: ReplyAudio, result: TurnResult, reporter: asyncio.Task[None]
    ) -> None:
        async for event in call.events():
            kind = event.WhichOneof("kind")
            result.event_kinds.append(str(kind))
            if kind == "transcript":
                result.transcript = event.transcript.text
                self.on_text("heard", result.transcript)
            elif kind == "text_delta":
                result.reply += event.text_delta.text
                self.on_text("reply", event.text_delta.text)
            elif kind == "audio":
                if result.audio_chunks == 0:
                    self._show(State.SPEAKING)
                result.audio_chunks += 1
                result.audio_bytes += len(event.audio.data)
                result.sample_rate = event.audio.sample_rate
                await asyncio.to_thread(audio.play, event.audio)  # one hop per chunk: decode, volume, play
            elif kind == "timing":
                result.timings[event.timing.stage] = event.timing.duration_ms
            elif kind == "error":
                result.errors.append(event.error.message)
            elif kind == "done":
                await asyncio.to_thread(audio.flush, result.sample_rate)
                result.backend = event.done.backend
                result.backend_reason = event.done.backend_reason
                result.interrupted = event.done.interrupted
                if result.audio_chunks:  # the server waits a moment for the playback report
                    await asyncio.wait({reporter}, timeout=PLUSH_PLAYBACK_WAIT_S)
                await call.done_writing()

    async def run(
        self,
        buttons: AsyncIterator[ButtonEvent],
        recorder: Recorder,
        make_sink: Callable[[], AudioSink],
    ) -> None:
        """The interactive loop until the button says quit. Errors end a turn, never the loop."""
        turn: asyncio.Task[TurnResult] | None = None
        listening: Listening | None = None
        self._show(State.OFFLINE if self.offline else State.IDLE)
        async for event in buttons:
            if event is ButtonEvent.QUIT:
                break
            if event is ButtonEvent.DOWN and listening is None:
                if turn is not None and not turn.done():
                    turn.cancel()  # barge-in
                    await asyncio.gather(turn, return_exceptions=True)
                listening = await self._listen(recorder)
            elif event is ButtonEvent.UP and listening is not None:
                pcm = await asyncio.to_thread(recorder.stop)  # closing the microphone's stream blocks
                listening.release()
                turn = asyncio.create_task(self._guarded_turn(pcm, make_sink(), listening))
                listening = None
        if listening is not None:
            await asyncio.to_thread(recorder.stop)
            await listening.cancel("quit")
        if turn is not None and not turn.done():
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
        if self._error_over is not None:
            self._error_over.cancel()
        for task in (self._reconnecting, self._refreshing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _listen(self, recorder: Recorder) -> Listening | None:
        """Button down: start recording, streaming the audio to STT on the plush or to the server at once."""
        uplink = None
        if not self.stt_on_device:
            try:
                call = await self.client.start_turn(self._turn_start())
            except UnreachableError as exc:
                self.on_text("error", str(exc))
                await self.go_offline()
                return None
            except PlushError as exc:
                self._failed(exc)
                return None
            uplink = AudioUplink(call, recorder.sample_rate)
        settled = await self._settled_uplink()
        listening = Listening(self.streaming if self.stt_on_device else None, recorder.sample_rate, uplink, settled)
        try:  # opening the microphone's stream blocks: in a thread, the lights and the paw board go on meanwhile
            await asyncio.to_thread(recorder.start, on_audio=listening.on_audio)
        except PlushError as exc:  # the microphone was unplugged: this press fails, the plush goes on
            await listening.cancel("no microphone")
            self._failed(exc)
            return None
        self._show(State.LISTENING)
        return listening

    async def _settled_uplink(self) -> SettledUplink | None:
        """With streaming STT on the plush and `device.speculate`: the turn's stream, opened now, so what is heard
        so far can reach the server while the button is held. A server not reached now costs nothing: the turn
        is asked at release, as without it."""
        if not (self.stt_on_device and self.streaming is not None and self.config.speculate) or self.settled_refused:
            return None
        try:
            return SettledUplink(await self.client.start_turn(self._turn_start()))
        except PlushError as exc:
            log.info("settled_stream_not_opened", device_id=self.config.id, error=str(exc))
            return None

    def _failed(self, exc: BaseException) -> None:
        """Show ERROR for `error_shown_s`, then IDLE (or OFFLINE), without holding up the next press."""
        log.warning("turn_failed", device_id=self.config.id, error=str(exc))
        self._show(State.ERROR)
        self.on_text("error", str(exc))
        self._error_over = asyncio.get_running_loop().call_later(self.error_shown_s, self._calm)

    def _calm(self) -> None:
        self._error_over = None
        self._show(State.OFFLINE if self.offline else State.IDLE)

    async def _guarded_turn(self, pcm: bytes, sink: AudioSink, listening: Listening) -> TurnResult:
        try:
            if len(pcm) < self.config.sample_rate // 5:  # under 0.1 s: a slip of the finger
                await listening.cancel("too short")
                self.on_text("heard", "")
                return TurnResult(errors=["too short"])
            return await self.take_turn(pcm, sink, listening)
        except UnreachableError as exc:
            log.warning("server_unreachable", device_id=self.config.id, error=str(exc))
            self.on_text("error", str(exc))
            await self.go_offline(sink)
            return TurnResult(errors=[str(exc)])
        except PlushError as exc:  # AuthError included: said once per press, never retried in a loop
            self._failed(exc)
            return TurnResult(errors=[str(exc)])
        except Exception as exc:  # a bug or an audio library's own error: logged in full, the plush goes on
            log.exception("turn_crashed", device_id=self.config.id)
            self._failed(exc)
            return TurnResult(errors=[f"{type(exc).__name__}: {exc}"])
        finally:
            if not self.offline and self._state is not State.ERROR:
                self._show(State.IDLE)

    @property
    def offline(self) -> bool:
        return self._reconnecting is not None and not self._reconnecting.done()

    async def go_offline(self, sink: AudioSink | None = None) -> None:
        """Say the offline phrase (when there is one), show OFFLINE, and look for the server until it is back."""
        self._show(State.OFFLINE)
        if sink is not None and self.phrases is not None:
            await self._in_sink(sink, lambda: self._say_offline_phrase(sink))
        if not self.offline:
            self._reconnecting = asyncio.create_task(reconnect(self.client, on_back=self._back_online))

    def _say_offline_phrase(self, sink: AudioSink) -> None:
        """Blocking (a file read, the speaker): run in a thread."""
        phrase = self.phrases.load() if self.phrases else None
        if phrase is not None:
            pcm, rate = phrase
            sink.write(self.volume(pcm), rate)
            sink.finish()

    def _back_online(self) -> None:
        self._show(State.IDLE)
        if self.phrases is not None:
            self._refreshing = asyncio.create_task(self.phrases.refresh(self.client))

    def volume(self, pcm: bytes) -> bytes:
        return scale_pcm16(pcm, self.config.volume)


async def _report_playback(call: ConverseCall, heard: asyncio.Event) -> None:
    """Send PlaybackStarted as soon as the speaker first plays the reply (the dashboard's waterfall shows it)."""
    await heard.wait()
    await call.playback_started()
