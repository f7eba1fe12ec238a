"""The gRPC Companion service: checks each stream against the contract, then hands the turn to the brain.

Protocol mistakes (no TurnStart first, an unsupported audio format, too much audio, an empty turn) end the RPC
with INVALID_ARGUMENT and a message saying what was wrong; the server itself carries on with the next turn.
After TurnEnd the request stream is still read, so a Cancel (barge-in) stops the reply at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from plush.errors import AudioFormatError
from plush.logs import get_logger
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc
from plush.server.auth import device_id
from plush.server.companion import Companion, TurnRequestData
from voice_models.audio import WHISPER_RATE, PcmResampleStream, pcm16_to_float, resample_pcm16
from voice_models.streaming_stt import StreamingStt, StreamingTranscription
from voice_models.stt import SttError, Transcriber
from voice_models.tts import TtsError

log = get_logger(__name__)

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

MIN_RATE, MAX_RATE = 8000, 48000
MAX_CHAT_CHARS = 4000
DRAIN_LIMIT_S = 2.0


@dataclass(frozen=True)
class Limits:
    """What one turn may carry."""

    max_audio_seconds: float


class ProtocolError(Exception):
    """A request that breaks the contract; becomes INVALID_ARGUMENT.

    `client_done` says the client already sent TurnEnd (or closed), so there is nothing left to drain.
    """

    def __init__(self, message: str, *, client_done: bool = False) -> None:
        super().__init__(message)
        self.client_done = client_done


@dataclass
class Utterance:
    """What the device sent before TurnEnd."""

    start: pb.TurnStart
    transcript: str | None = None
    pcm: bytearray | None = None
    sample_rate: int = 0
    cancelled: bool = False
    ended: bool = False
    transcription: StreamingTranscription | None = None
    """Streaming STT fed as the audio arrives (when the server has it), so little is left at TurnEnd."""
    resample: PcmResampleStream | None = None

    def drop_transcription(self) -> None:
        """Stop the streaming STT's worker (the turn failed or was cancelled before its text was needed)."""
        if self.transcription is not None:
            self.transcription.cancel()
            self.transcription = None


class CompanionService(pb_grpc.CompanionServicer):
    """Implements Converse (the plush) and Chat (text clients)."""

    def __init__(
        self,
        companion: Companion,
        transcriber: Transcriber | None,
        limits: Limits,
        streaming: StreamingStt | None = None,
        *,
        bind_conversations: bool = False,
    ) -> None:
        self.companion = companion
        self.transcriber = transcriber
        self.limits = limits
        self.streaming = streaming
        self.bind_conversations = bind_conversations
        """With device tokens on, a client names conversations only inside its own (it cannot read others')."""

    async def Converse(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.TurnRequest], context: Context
    ) -> AsyncIterator[pb.TurnEvent]:
        device_id = _device_id(context)
        turn_id = uuid.uuid4().hex[:12]
        try:
            utterance = await self._read_utterance(request_iterator)
        except ProtocolError as exc:
            log.warning("bad_request", device_id=device_id, error=str(exc))
            if not exc.client_done:
                await _drain(request_iterator)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        if utterance.cancelled or not utterance.ended:
            utterance.drop_transcription()
            return
        turn = TurnRequestData(
            turn_id=turn_id,
            conversation_id=self._conversation(utterance.start.conversation_id, f"device:{device_id}"),
            device_id=device_id,
            source="device",
            user_text="",
            language=utterance.start.language,
            want_audio=utterance.start.want_audio,
            output_sample_rate=utterance.start.output_sample_rate,
            output_encoding=utterance.start.output_encoding,
        )
        if utterance.transcript is None:
            try:
                turn.user_text, turn.language = await self._transcribe(utterance, turn)
            except (AudioFormatError, SttError) as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                return
        else:
            turn.user_text = utterance.transcript
        yield pb.TurnEvent(
            turn_id=turn_id, transcript=pb.Transcript(text=turn.user_text, language=turn.language, final=True)
        )
        if not turn.user_text:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no speech was recognised in the audio")
            return
        async for event in self._reply_until_cancelled(turn, request_iterator):
            yield event

    async def Chat(  # noqa: N802 - gRPC method name
        self, request: pb.ChatRequest, context: Context
    ) -> AsyncIterator[pb.TurnEvent]:
        text = request.text.strip()
        if not text:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty message: send some text")
            return
        if len(text) > MAX_CHAT_CHARS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message too long: {len(text)} characters (max {MAX_CHAT_CHARS})",
            )
            return
        if (problem := _output_problem(request.output_sample_rate, request.output_encoding)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return
        client_id = _device_id(context)
        turn = TurnRequestData(
            turn_id=uuid.uuid4().hex[:12],
            conversation_id=self._conversation(request.conversation_id, f"chat:{client_id}"),
            device_id=client_id,
            source="chat",
            user_text=text,
            want_audio=request.want_audio,
            output_sample_rate=request.output_sample_rate,
            output_encoding=request.output_encoding,
        )
        async for event in self.companion.reply(turn):
            yield event

    async def Phrases(  # noqa: N802 - gRPC method name
        self, request: pb.PhrasesRequest, context: Context
    ) -> pb.PhrasesReply:
        """The persona's offline line in its voice, for the plush to keep for when the server is unreachable."""
        if (problem := _output_problem(request.output_sample_rate, pb.AUDIO_ENCODING_PCM_S16LE)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        persona = self.companion.persona
        speech = self.companion.speech
        reply = pb.PhrasesReply(persona=persona.name, brain=self.companion.router.description)
        text = persona.spec.offline_line or persona.spec.fallback_line
        phrase = pb.Phrase(name="offline", text=text)
        if speech is not None:
            rate = request.output_sample_rate or speech.native_rate
            try:
                pcm = b"".join(await speech.speak(text, rate))
            except TtsError as exc:
                await context.abort(grpc.StatusCode.INTERNAL, f"cannot synthesize the offline phrase: {exc}")
            phrase.audio.CopyFrom(
                pb.AudioChunk(data=pcm, sample_rate=rate, channels=1, encoding=pb.AUDIO_ENCODING_PCM_S16LE)
            )
        reply.phrases.append(phrase)
        return reply

    def _conversation(self, requested: str, own: str) -> str:
        """The conversation a turn belongs to: the client's own, or one it named (inside its own when bound)."""
        if not requested:
            return own
        return f"{own}/{requested}" if self.bind_conversations else requested

    async def _read_utterance(self, requests: AsyncIterator[pb.TurnRequest]) -> Utterance:
        """Read TurnStart, then audio or a transcript, up to TurnEnd (or Cancel, or the stream's end)."""
        first = await anext(requests, None)
        if first is None:
            raise ProtocolError("empty stream: a turn starts with a TurnStart message", client_done=True)
        kind = first.WhichOneof("kind")
        if kind != "start":
            raise ProtocolError(f"a turn must start with TurnStart, got '{kind}' first")
        if (problem := _output_problem(first.start.output_sample_rate, first.start.output_encoding)) is not None:
            raise ProtocolError(problem)
        utterance = Utterance(start=first.start)
        try:
            await self._read_turn(utterance, requests)
        except BaseException:
            utterance.drop_transcription()
            raise
        return utterance

    async def _read_turn(self, utterance: Utterance, requests: AsyncIterator[pb.TurnRequest]) -> None:
        """The messages after TurnStart, up to TurnEnd or Cancel."""
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "audio":
                self._add_audio(utterance, request.audio)
            elif kind == "transcript":
                utterance.transcript = request.transcript.text.strip()
            elif kind == "end":
                utterance.ended = True
                break
            elif kind == "cancel":
                utterance.cancelled = True
                break
            else:
                raise ProtocolError(f"unexpected '{kind}' message inside a turn")
        if utterance.ended and utterance.transcript is None and not utterance.pcm:
            raise ProtocolError("empty turn: no audio and no transcript before TurnEnd", client_done=True)
        if utterance.transcript is not None and utterance.pcm:
            raise ProtocolError("a turn carries audio or a transcript, not both", client_done=True)

    def _add_audio(self, utterance: Utterance, chunk: pb.AudioChunk) -> None:
        if chunk.encoding not in (pb.AUDIO_ENCODING_UNSPECIFIED, pb.AUDIO_ENCODING_PCM_S16LE):
            raise ProtocolError(f"unsupported audio encoding {pb.AudioEncoding.Name(chunk.encoding)}; send PCM_S16LE")
        if chunk.channels not in (0, 1):
            raise ProtocolError(f"unsupported channel count {chunk.channels}; send mono audio")
        if not MIN_RATE <= chunk.sample_rate <= MAX_RATE:
            raise ProtocolError(
                f"unsupported sample rate {chunk.sample_rate} Hz; send {MIN_RATE}-{MAX_RATE} Hz (16000 is best)"
            )
        if utterance.pcm is None:
            utterance.pcm, utterance.sample_rate = bytearray(), chunk.sample_rate
        elif chunk.sample_rate != utterance.sample_rate:
            raise ProtocolError(f"sample rate changed mid-turn from {utterance.sample_rate} to {chunk.sample_rate}")
        if len(chunk.data) % 2:
            raise ProtocolError("PCM_S16LE audio must have an even number of bytes")
        utterance.pcm.extend(chunk.data)
        seconds = len(utterance.pcm) / (2 * utterance.sample_rate)
        if seconds > self.limits.max_audio_seconds:
            raise ProtocolError(f"audio is longer than the {self.limits.max_audio_seconds:g} s maximum for a turn")
        if self.streaming is not None:
            if utterance.transcription is None:
                utterance.transcription = self.streaming.begin()
                utterance.resample = PcmResampleStream(utterance.sample_rate, WHISPER_RATE)
            assert utterance.resample is not None
            utterance.transcription.feed(utterance.resample.feed(chunk.data))

    async def _transcribe(self, utterance: Utterance, turn: TurnRequestData) -> tuple[str, str]:
        """The utterance's text: what streaming STT has left to finish, or the whole recording decoded now."""
        start = turn.clock.now_ms()
        if utterance.transcription is not None and utterance.resample is not None:
            utterance.transcription.feed(utterance.resample.flush())
            result = await utterance.transcription.finish_async()
        else:
            if self.transcriber is None:
                raise SttError("speech to text is off on this server (server.stt_on_server); send a transcript instead")
            assert utterance.pcm is not None
            pcm = resample_pcm16(bytes(utterance.pcm), utterance.sample_rate, WHISPER_RATE)
            result = await asyncio.to_thread(self.transcriber.transcribe, pcm16_to_float(pcm))
        turn.clock.record("stt", start)
        return result.text, result.language

    async def _reply_until_cancelled(
        self, turn: TurnRequestData, requests: AsyncIterator[pb.TurnRequest]
    ) -> AsyncIterator[pb.TurnEvent]:
        """Stream the reply while watching the request stream for Cancel (barge-in)."""
        events: asyncio.Queue[pb.TurnEvent | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with aclosing(self.companion.reply(turn)) as replies:
                    async for event in replies:
                        events.put_nowait(event)
            finally:
                events.put_nowait(None)

        async def watch() -> None:
            async for request in requests:
                if request.WhichOneof("kind") == "cancel":
                    log.info("turn_cancelled", turn_id=turn.turn_id, device_id=turn.device_id)
                    pumper.cancel()
                    return

        pumper = asyncio.create_task(pump())
        watcher = asyncio.create_task(watch())
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            for task in (pumper, watcher):
                task.cancel()
            await asyncio.gather(pumper, watcher, return_exceptions=True)


async def _drain(requests: AsyncIterator[pb.TurnRequest], limit_s: float = DRAIN_LIMIT_S) -> None:
    """Read what the client is still sending for this turn (up to TurnEnd/Cancel, bounded) before failing it.

    grpc-python's asyncio client reports INTERNAL instead of the server's status when one of its writes fails
    because the server already ended the call (grpc/grpc#36066), so the status waits until the client is done.
    """
    with suppress(TimeoutError, grpc.aio.AioRpcError):
        async with asyncio.timeout(limit_s):
            async for request in requests:
                if request.WhichOneof("kind") in ("end", "cancel"):
                    return


def _output_problem(sample_rate: int, encoding: int) -> str | None:
    """What is wrong with the reply format a client asked for, or None."""
    if encoding not in pb.AudioEncoding.values():
        return f"unknown output encoding {encoding}; ask for PCM_S16LE or OPUS"
    if sample_rate and not MIN_RATE <= sample_rate <= MAX_RATE:
        return f"unsupported output sample rate {sample_rate} Hz; ask for {MIN_RATE}-{MAX_RATE} Hz (or 0)"
    return None


def _device_id(context: Context) -> str:
    return device_id(context.invocation_metadata())
