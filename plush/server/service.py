"""The gRPC Companion service: checks each stream against the contract, then hands the turn to the brain.

Every turn is admitted by `TurnsInFlight` (bounded, one open turn per plush, stopped at shutdown) and ends with a
status a client can read and an outcome in the turn log, whatever happens: refusals (a broken contract, a server
limit) drain what the client is still sending before the status goes out (see refusals.py). After TurnEnd the
request stream is still read, so a Cancel (barge-in) stops the reply at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc

from plush.config import ServerConfig
from plush.errors import AudioFormatError
from plush.logs import get_logger
from plush.owners import Owners
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc
from plush.protos.timing import PLAYBACK_REPORT_S
from plush.server.auth import UNKNOWN_DEVICE, device_id
from plush.server.companion import Companion, TurnRequestData
from plush.server.contract_limits import LIMITS, Undecodable, lenient, string_problem
from plush.server.in_flight import AdmissionError, Slot, StopReason, TurnsInFlight
from plush.server.refusals import refuse
from plush.server.speculation import TurnSpeculations
from plush.server.store.records import Outcome, new_turn_id
from plush.server.utterance import (
    Limits,
    TurnEndedError,
    TurnRequests,
    Utterance,
    conversation_problem,
    output_problem,
    protocol_error,
    read_utterance,
)
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.streaming_stt import StreamingStt, StreamingTranscription
from plush.voice_models.stt import SttError, Transcriber
from plush.voice_models.tts import TtsError

log = get_logger(__name__)

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

__all__ = ["CompanionService", "Limits"]
MAX_CHAT_CHARS = LIMITS["ChatRequest.text"]
PLAYED_STAGE = "first_audio_played"


class CompanionService(pb_grpc.CompanionServicer):
    """Implements Converse (the plush), Chat (text clients) and Phrases (the plush's offline line)."""

    def __init__(
        self,
        companion: Companion,
        transcriber: Transcriber | None,
        limits: Limits,
        streaming: StreamingStt | None = None,
        *,
        bind_conversations: bool = False,
        owners: Owners | None = None,
        in_flight: TurnsInFlight | None = None,
        token_problem: Callable[[Any], str | None] | None = None,
        max_speculations: int = ServerConfig().max_speculations,
    ) -> None:
        self.companion = companion
        self.max_speculations = max_speculations
        """Speculative starts of the brain a turn may make before its release (0: none; see speculation.py)."""
        self.token_problem = token_problem
        """Why a call's metadata is not (or no longer) accepted, or None; None when no tokens are checked. Turns
        keep it, so a plush unpaired mid-turn is stopped (`TurnsInFlight.stop_revoked`)."""
        self.transcriber = transcriber
        self.limits = limits
        self.streaming = streaming
        self.bind_conversations = bind_conversations
        """With device tokens on, a client names conversations only inside its own (it cannot read others')."""
        self.owners = owners or Owners()
        """Whose memory each caller's turns use: its household's, or its own (see plush/owners.py)."""
        if in_flight is None:
            defaults = ServerConfig()
            in_flight = TurnsInFlight(defaults.max_turns_in_flight, defaults.max_stt_in_flight)
        self.in_flight = in_flight
        """The turns being served (shared with the app, which stops them at shutdown)."""

    async def Converse(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.TurnRequest], context: Context
    ) -> None:
        """A spoken turn: TurnStart, audio or a transcript, TurnEnd; then the reply, until it is done or cancelled."""
        requests = TurnRequests(request_iterator, self.limits)
        client_id = _device_id(context)
        try:
            start = await _turn_start(requests)
        except TurnEndedError as ended:  # not a turn yet: nothing to store
            log.warning("bad_request", device_id=client_id, error=str(ended))
            await _refuse_turn(context, ended.code, str(ended), None if ended.client_done else requests)
        turn = self._turn(client_id, "device", start.conversation_id, start)
        turn.language = start.language
        progress = _Progress()
        try:
            await self._converse(turn, start, requests, context, progress)
        except TurnEndedError as ended:
            if not progress.replying:  # a reply in progress is stored by the brain
                await self.companion.store_unanswered(turn, ended.outcome, str(ended))
            self._let_go(progress)  # before the drain: a refused plush may stream on for seconds
            await _refuse_turn(context, ended.code, str(ended), None if ended.client_done else requests)
        except asyncio.CancelledError:
            stopped = progress.slot.stopped if progress.slot is not None else None
            read = progress.utterance is not None
            if not progress.replying:
                outcome: Outcome = "interrupted" if read or stopped is StopReason.SHUTDOWN else "abandoned"
                await self.companion.store_unanswered(
                    turn, outcome, stopped.message if stopped else "the client hung up"
                )
            if stopped is None:  # the client hung up: nobody is left to tell
                raise
            _uncancel()
            await refuse(context, stopped.code, stopped.message, None if read else requests.stream)
        except Exception as exc:  # a bug or a failing model: the turn is stored with its error, the client told
            log.exception("turn_failed", turn_id=turn.turn_id, device_id=client_id)
            message = f"{type(exc).__name__}: {exc}"
            if not progress.replying:
                await self.companion.store_unanswered(turn, "error", message)
            drain = None if progress.utterance is not None else requests
            self._let_go(progress)
            await _refuse_turn(context, grpc.StatusCode.INTERNAL, f"the server failed on this turn: {message}", drain)
        finally:
            self._let_go(progress)

    def _let_go(self, progress: _Progress) -> None:
        """The turn has ended and been stored: its transcription stops and its place is free for another turn."""
        if progress.utterance is not None:
            progress.utterance.drop_transcription()
        if progress.speculations is not None:
            progress.speculations.close()
        if progress.slot is not None:
            self.in_flight.release(progress.slot)
            progress.slot = None

    async def _converse(
        self,
        turn: TurnRequestData,
        start: pb.TurnStart,
        requests: TurnRequests,
        context: Context,
        progress: _Progress,
    ) -> None:
        """A Converse turn from its TurnStart to its reply's end; how it ends otherwise is raised."""
        # Its strings were checked as it was read (TurnRequests.next, contract_limits).
        if problem := output_problem(start.output_sample_rate, start.output_encoding):
            raise protocol_error(problem)
        slot = progress.slot = self._admit(turn, context, one_per_device=turn.device_id != UNKNOWN_DEVICE)
        on_settled = None
        if self.max_speculations:
            speculations = TurnSpeculations(lambda text: self.companion.speculate(turn, text), self.max_speculations)
            turn.speculations = progress.speculations = speculations
            on_settled = lambda settled: speculations.settled(settled.text)  # noqa: E731
        utterance = progress.utterance = await read_utterance(
            requests, start, lambda rate: self._start_stt(slot, rate), on_settled
        )
        if utterance.cancelled:
            await self.companion.store_unanswered(turn, "abandoned", "cancelled before TurnEnd")
            return
        turn.user_text, turn.language = await self._text_of(utterance, turn, slot)
        heard = pb.Transcript(text=turn.user_text, language=turn.language, final=True)
        await self._send(context, pb.TurnEvent(turn_id=turn.turn_id, transcript=heard))
        if not turn.user_text:
            raise TurnEndedError(
                grpc.StatusCode.INVALID_ARGUMENT, "no speech was recognised in the audio", "no_speech", client_done=True
            )
        progress.replying = True
        await self._reply(turn, requests, context)

    async def Chat(  # noqa: N802 - gRPC method name
        self, request: pb.ChatRequest | Undecodable, context: Context
    ) -> None:
        """A text turn: the reply streams back as events (text, audio when asked for, timings, done)."""
        client_id = _device_id(context)
        if isinstance(request, Undecodable):
            log.warning("bad_request", device_id=client_id, error=request.problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.problem)
        text = request.text.strip()
        turn = self._turn(client_id, "chat", request.conversation_id, request)
        turn.user_text = text[:MAX_CHAT_CHARS]
        slot: Slot | None = None
        try:
            if problem := _chat_problem(text, request):
                raise protocol_error(problem)
            slot = self._admit(turn, context, one_per_device=False)
            async with aclosing(self.companion.reply(turn)) as replies:
                async for event in replies:
                    await self._send(context, event)
        except TurnEndedError as ended:
            if slot is None:  # once admitted, the brain stores the turn
                await self.companion.store_unanswered(turn, ended.outcome, str(ended))
            await context.abort(ended.code, str(ended))
        except asyncio.CancelledError:
            if slot is None or slot.stopped is None:
                raise
            _uncancel()
            await context.abort(slot.stopped.code, slot.stopped.message)
        finally:
            if slot is not None:
                self.in_flight.release(slot)

    async def Phrases(  # noqa: N802 - gRPC method name
        self, request: pb.PhrasesRequest | Undecodable, context: Context
    ) -> pb.PhrasesReply:
        """The persona's offline line in its voice, for the plush to keep for when the server is unreachable."""
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.problem)
        if (problem := output_problem(request.output_sample_rate, pb.AUDIO_ENCODING_PCM_S16LE)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        persona = self.companion.persona
        speech = self.companion.speech
        reply = pb.PhrasesReply(
            persona=persona.name,
            brain=self.companion.router.description,
            voices=speech.description() if speech is not None else "",
        )
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

    def _turn(
        self, client_id: str, source: str, requested: str, wanted: pb.TurnStart | pb.ChatRequest
    ) -> TurnRequestData:
        """A new turn of this client; a conversation name that is too long is refused later, the turn kept in
        the client's own conversation."""
        own = f"{source}:{client_id}"
        return TurnRequestData(
            turn_id=new_turn_id(),
            conversation_id=self._conversation("" if conversation_problem(requested) else requested, own),
            device_id=client_id,
            owner=self.owners.for_device(client_id),
            source=source,
            user_text="",
            want_audio=wanted.want_audio,
            output_sample_rate=wanted.output_sample_rate,
            output_encoding=wanted.output_encoding,
        )

    def _conversation(self, requested: str, own: str) -> str:
        """The conversation a turn belongs to: the client's own, or one it named (inside its own when bound)."""
        if not requested:
            return own
        return f"{own}/{requested}" if self.bind_conversations else requested

    def _admit(self, turn: TurnRequestData, context: Context, *, one_per_device: bool) -> Slot:
        try:
            slot = self.in_flight.admit(turn.turn_id, turn.device_id, one_per_device=one_per_device)
        except AdmissionError as exc:
            raise TurnEndedError(exc.code, str(exc), "refused") from exc
        slot.on_stop = lambda reason: setattr(turn, "stopped_because", reason.name.lower())
        if (check := self.token_problem) is not None:
            metadata = context.invocation_metadata()
            slot.allowed = lambda: check(metadata) is None
        return slot

    def _start_stt(self, slot: Slot, sample_rate: int) -> StreamingTranscription | None:
        """At a turn's first audio chunk: a place in server-side STT, and a streaming transcription to feed."""
        if self.transcriber is None:
            raise protocol_error("speech to text is off on this server (server.stt_on_server); send a transcript")
        try:
            self.in_flight.take_stt(slot)
        except AdmissionError as exc:
            raise TurnEndedError(exc.code, str(exc), "refused") from exc
        return self.streaming.begin() if self.streaming is not None else None

    async def _text_of(self, utterance: Utterance, turn: TurnRequestData, slot: Slot) -> tuple[str, str]:
        """What the owner said: the device's transcript, or the server's transcription of the audio."""
        if utterance.transcript is not None:
            return utterance.transcript, turn.language or utterance.transcript_language
        try:
            return await self._transcribe(utterance, turn)
        except AudioFormatError as exc:
            raise protocol_error(str(exc), client_done=True) from exc
        except SttError as exc:
            raise TurnEndedError(grpc.StatusCode.INTERNAL, str(exc), "error", client_done=True) from exc
        finally:
            self.in_flight.release_stt(slot)

    async def _transcribe(self, utterance: Utterance, turn: TurnRequestData) -> tuple[str, str]:
        """The utterance's text: what streaming STT has left to finish, or the whole recording decoded now.

        Cancelling the turn drops work that has not started: the streaming worker is cancelled by the caller,
        and a whole-recording job still queued for a worker thread never runs.
        """
        start = turn.clock.now_ms()
        if utterance.transcription is not None and utterance.resample is not None:
            utterance.transcription.feed(utterance.resample.flush())
            result = await utterance.transcription.finish_async()
            utterance.transcription = None
        else:
            assert self.transcriber is not None and utterance.pcm is not None
            pcm = resample_pcm16(bytes(utterance.pcm), utterance.sample_rate, WHISPER_RATE)
            result = await asyncio.to_thread(self.transcriber.transcribe, pcm16_to_float(pcm))
        turn.clock.record("stt", start)
        return result.text, result.language

    async def _send(self, context: Context, event: pb.TurnEvent) -> None:
        """Write one event; a client that reads nothing for `idle_timeout_s` loses the turn (no write hangs)."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout_s):
                await context.write(event)
        except TimeoutError:
            raise TurnEndedError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the client read nothing for {self.limits.idle_timeout_s:g} s (server.idle_timeout_s)",
                "interrupted",
                client_done=True,
            ) from None

    async def _reply(self, turn: TurnRequestData, requests: TurnRequests, context: Context) -> None:
        """Stream the reply while watching the request stream for Cancel (barge-in)."""
        events: asyncio.Queue[pb.TurnEvent | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with aclosing(self.companion.reply(turn)) as replies:
                    async for event in replies:
                        events.put_nowait(event)
            finally:
                events.put_nowait(None)

        played = asyncio.Event()

        async def watch() -> None:
            async for request in requests.stream:
                if isinstance(request, Undecodable):  # mid-reply: nothing to refuse it with but the log
                    log.warning("bad_request", turn_id=turn.turn_id, error=request.problem)
                    continue
                kind = request.WhichOneof("kind")
                if kind == "cancel":
                    log.info("turn_cancelled", turn_id=turn.turn_id, device_id=turn.device_id)
                    turn.stopped_because = "barge_in"
                    pumper.cancel()
                    return
                if kind == "playback_started" and not played.is_set():
                    turn.clock.record(PLAYED_STAGE, 0.0)
                    played.set()

        pumper = asyncio.create_task(pump())
        watcher = asyncio.create_task(watch())
        audio_sent = False
        try:
            while (event := await events.get()) is not None:
                audio_sent = audio_sent or event.HasField("audio")
                try:
                    await self._send(context, event)
                except TurnEndedError:
                    turn.stopped_because = "client_not_reading"
                    raise
            if audio_sent:
                await self._await_playback(turn, watcher, played)
        finally:
            for task in (pumper, watcher):
                task.cancel()
            await asyncio.gather(pumper, watcher, return_exceptions=True)

    async def _await_playback(self, turn: TurnRequestData, watcher: asyncio.Task[None], played: asyncio.Event) -> None:
        """After the reply: give the plush a moment to say when its speaker started (it closes its side of the
        stream right after), and add that milestone to the stored turn."""
        if not played.is_set():
            waiting = asyncio.ensure_future(played.wait())
            await asyncio.wait({watcher, waiting}, timeout=PLAYBACK_REPORT_S, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        if played.is_set():
            _, played_ms = turn.clock.stages[PLAYED_STAGE]
            await self.companion.wait_stored()
            await self.companion.store.add_timing(turn.turn_id, PLAYED_STAGE, played_ms)


@dataclass
class _Progress:
    """How far a Converse turn got, for whoever ends it: what to store, what to release."""

    slot: Slot | None = None
    utterance: Utterance | None = None
    """Set once TurnEnd (or Cancel) has arrived."""
    replying: bool = False
    """The brain has the turn: it stores the turn itself, however the reply ends."""
    speculations: TurnSpeculations | None = None
    """The brain started on the plush's settled text, stopped when the turn ends unless adopted."""


async def _refuse_turn(
    context: Context, code: grpc.StatusCode, message: str, requests: TurnRequests | None
) -> NoReturn:
    """End a turn the server will not answer; a client still writing is read to its TurnEnd first, for as long as
    the turn itself may last (see refusals.py: a plush refused for load streams until its button is let go)."""
    if requests is None:
        await refuse(context, code, message)
    await refuse(context, code, message, requests.stream, drain_s=requests.time_left())


async def _turn_start(requests: TurnRequests) -> pb.TurnStart:
    """The stream's first message, which must be TurnStart."""
    first = await requests.next()
    if first is None:
        raise protocol_error("empty stream: a turn starts with a TurnStart message", client_done=True)
    kind = first.WhichOneof("kind")
    if kind != "start":
        raise protocol_error(f"a turn must start with TurnStart, got '{kind}' first")
    return first.start


def _chat_problem(text: str, request: pb.ChatRequest) -> str | None:
    """What is wrong with a text message, or None."""
    if not text:
        return "empty message: send some text"
    return string_problem(request) or output_problem(request.output_sample_rate, request.output_encoding)


def _uncancel() -> None:
    """The server itself stopped this RPC's task (shutdown, a newer turn): let it go on to tell the client why."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _device_id(context: Context) -> str:
    return device_id(context.invocation_metadata())


def add_to_server(service: CompanionService, server: grpc.aio.Server) -> None:
    """Register the Companion service as its generated `add_CompanionServicer_to_server` does, but with
    `lenient` request deserializers, so a request that does not decode gets INVALID_ARGUMENT from the handler."""
    handlers = {
        "Converse": grpc.stream_stream_rpc_method_handler(
            service.Converse,
            request_deserializer=lenient(pb.TurnRequest),
            response_serializer=pb.TurnEvent.SerializeToString,
        ),
        "Chat": grpc.unary_stream_rpc_method_handler(
            service.Chat,
            request_deserializer=lenient(pb.ChatRequest),
            response_serializer=pb.TurnEvent.SerializeToString,
        ),
        "Phrases": grpc.unary_unary_rpc_method_handler(
            service.Phrases,
            request_deserializer=lenient(pb.PhrasesRequest),
            response_serializer=pb.PhrasesReply.SerializeToString,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["Companion"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
