"""The plush's turn loop: button down -> listen, button up -> transcribe and ask the server, play the reply.

States follow ARCHITECTURE.md (idle, listening, thinking, speaking, error) and are reported to an indicator
(LEDs later, a terminal status line now). Pressing the button while the plush speaks stops the reply at once,
cancels the turn on the server and starts listening again.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plush.config import DeviceConfig
from plush.device.audio_io import Player, Recorder
from plush.device.client import CompanionClient, ConverseCall, UnreachableError
from plush.device.controls import ButtonEvent
from plush.device.listening import AudioUplink, Listening
from plush.device.offline import OfflinePhrases, reconnect
from plush.errors import PlushError
from plush.logs import get_logger
from plush.protos.plush.v1 import companion_pb2 as pb
from voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16, scale_pcm16, write_wav
from voice_models.opus import OpusDecoder
from voice_models.streaming_stt import StreamingStt, StreamingTranscription
from voice_models.stt import Transcriber, TranscriptResult

log = get_logger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OFFLINE = "offline"
    """The server cannot be reached; the plush looks for it in the background."""
    ERROR = "error"


class AudioSink(Protocol):
    """Where the reply's audio goes: the speaker, or a file."""

    def write(self, pcm: bytes, sample_rate: int) -> None: ...
    def finish(self) -> None: ...
    def stop_now(self) -> None: ...


class WavSink:
    """Collects the reply and writes it as a WAV file when the turn ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pcm = bytearray()
        self._rate = 0

    def write(self, pcm: bytes, sample_rate: int) -> None:
        self._rate = self._rate or sample_rate  # one file, one rate: later audio is resampled to the first's
        self._pcm.extend(resample_pcm16(pcm, sample_rate, self._rate))

    def finish(self) -> None:
        write_wav(self.path, bytes(self._pcm), self._rate or 16000)

    def stop_now(self) -> None:
        self.finish()


class SpeakerSink:
    """Plays the reply as it arrives; the stream opens at the rate of the first chunk."""

    def __init__(self, device: str | None = None, prebuffer_ms: int = 80) -> None:
        self._device = device
        self._prebuffer_ms = prebuffer_ms
        self._player: Player | None = None

    def write(self, pcm: bytes, sample_rate: int) -> None:
        if self._player is None:
            self._player = Player(sample_rate, self._device, self._prebuffer_ms)
        # The stream's rate is the first audio's; anything later at another rate (the offline phrase after an
        # Opus reply) is resampled rather than played at the wrong speed.
        self._player.write(resample_pcm16(pcm, sample_rate, self._player.sample_rate))

    def finish(self) -> None:
        if self._player is not None:
            self._player.finish(timeout_s=120)

    def stop_now(self) -> None:
        if self._player is not None:
            self._player.stop_now()


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


class ReplyAudio:
    """Turns the reply's audio chunks into PCM: as is, or through one Opus decoder for the whole reply."""

    def __init__(self) -> None:
        self._opus: OpusDecoder | None = None

    def pcm(self, chunk: pb.AudioChunk) -> bytes:
        if chunk.encoding != pb.AUDIO_ENCODING_OPUS:
            return bytes(chunk.data)
        if self._opus is None:
            self._opus = OpusDecoder(chunk.sample_rate)
        return self._opus.decode(chunk.data)

    def flush(self) -> bytes:
        return self._opus.flush() if self._opus is not None else b""


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
    ) -> None:
        self.config = config
        self.client = client
        self.transcriber = transcriber
        self.streaming = streaming
        self.phrases = phrases
        self._reconnecting: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[bool] | None = None
        self.on_state = on_state
        self.on_text = on_text

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
        stream to the server that already carried it (server-side STT).
        """
        self.on_state(State.THINKING)
        result = TurnResult()
        start = self._turn_start()
        transcription = listening.transcription if listening else None
        uplink = listening.uplink if listening else None
        if uplink is not None:
            call = await uplink.finish()
        elif self.config.stt == "device":
            heard = await self._hear(pcm, transcription)
            result.stt_after_release_ms = round(heard.elapsed_s * 1000, 1)
            if not heard.text:
                result.errors.append("no speech recognised")
                self.on_text("heard", "")
                return result
            start.language = heard.language
            call = await self.client.converse(start, transcript=heard.text)
        else:
            call = await self.client.converse(start, pcm=pcm, sample_rate=self.config.sample_rate)
        try:
            await self._receive(call, sink, result)
            # Piper is faster than speech: most of the reply plays here, so a press now must stop it too.
            await asyncio.to_thread(sink.finish)
        except asyncio.CancelledError:
            sink.stop_now()
            await call.cancel()
            result.interrupted = True
            raise
        return result

    async def _receive(self, call: ConverseCall, sink: AudioSink, result: TurnResult) -> None:
        decoder = ReplyAudio()
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
                    self.on_state(State.SPEAKING)
                result.audio_chunks += 1
                result.audio_bytes += len(event.audio.data)
                result.sample_rate = event.audio.sample_rate
                sink.write(self.volume(decoder.pcm(event.audio)), event.audio.sample_rate)
            elif kind == "timing":
                result.timings[event.timing.stage] = event.timing.duration_ms
            elif kind == "error":
                result.errors.append(event.error.message)
            elif kind == "done":
                if tail := decoder.flush():
                    sink.write(self.volume(tail), result.sample_rate)
                result.backend = event.done.backend
                result.backend_reason = event.done.backend_reason
                result.interrupted = event.done.interrupted

    async def run(
        self,
        buttons: AsyncIterator[ButtonEvent],
        recorder: Recorder,
        make_sink: Callable[[], AudioSink],
    ) -> None:
        """The interactive loop until the button says quit. Errors end a turn, never the loop."""
        turn: asyncio.Task[TurnResult] | None = None
        listening: Listening | None = None
        self.on_state(State.OFFLINE if self.offline else State.IDLE)
        async for event in buttons:
            if event is ButtonEvent.QUIT:
                break
            if event is ButtonEvent.DOWN and listening is None:
                if turn is not None and not turn.done():
                    turn.cancel()  # barge-in
                    await asyncio.gather(turn, return_exceptions=True)
                listening = await self._listen(recorder)
            elif event is ButtonEvent.UP and listening is not None:
                pcm = recorder.stop()
                listening.release()
                turn = asyncio.create_task(self._guarded_turn(pcm, make_sink(), listening))
                listening = None
        if listening is not None:
            recorder.stop()
            await listening.cancel("quit")
        if turn is not None and not turn.done():
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
        for task in (self._reconnecting, self._refreshing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _listen(self, recorder: Recorder) -> Listening | None:
        """Button down: start recording, streaming the audio to STT on the plush or to the server at once."""
        uplink = None
        if self.config.stt == "server":
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
        listening = Listening(self.streaming if self.config.stt == "device" else None, recorder.sample_rate, uplink)
        try:
            recorder.start(on_audio=listening.on_audio)
        except PlushError as exc:  # the microphone was unplugged: this press fails, the plush goes on
            await listening.cancel("no microphone")
            self._failed(exc)
            return None
        self.on_state(State.LISTENING)
        return listening

    def _failed(self, exc: BaseException) -> None:
        log.warning("turn_failed", device_id=self.config.id, error=str(exc))
        self.on_state(State.ERROR)
        self.on_text("error", str(exc))

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
            if not self.offline:
                self.on_state(State.IDLE)

    @property
    def offline(self) -> bool:
        return self._reconnecting is not None and not self._reconnecting.done()

    async def go_offline(self, sink: AudioSink | None = None) -> None:
        """Say the offline phrase (when there is one), show OFFLINE, and look for the server until it is back."""
        self.on_state(State.OFFLINE)
        phrase = self.phrases.load() if self.phrases else None
        if sink is not None and phrase is not None:
            pcm, rate = phrase
            sink.write(self.volume(pcm), rate)
            await asyncio.to_thread(sink.finish)
        if not self.offline:
            self._reconnecting = asyncio.create_task(reconnect(self.client, on_back=self._back_online))

    def _back_online(self) -> None:
        self.on_state(State.IDLE)
        if self.phrases is not None:
            self._refreshing = asyncio.create_task(self.phrases.refresh(self.client))

    def volume(self, pcm: bytes) -> bytes:
        return scale_pcm16(pcm, self.config.volume)
