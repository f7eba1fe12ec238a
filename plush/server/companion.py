"""One turn of conversation, from the owner's words to streamed text and speech, stored with its timings.

The LLM streams text deltas; the sentence chunker cuts them into pieces; each piece is synthesized in a worker
thread while the LLM keeps going, so the first audio leaves long before the reply is complete. The child-safety
check (plush/server/safety) reads what the owner said before any brain does, and each piece of the reply before
it is sent as text or speech: a flagged turn gets the persona's calm line instead and is stored `blocked`, with
what was flagged and where. Whatever happens
(an error, a cancelled turn), the turn is stored with its outcome, and every write is tracked until it is done, so
a server shutting down closes the store only after the turns it stopped are in it. A turn that reaches the brain is
in the store from its start, as interrupted (see turn_journal.py), so a replica killed mid-reply loses none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from plush.logs import get_logger
from plush.owners import device_owner
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.llm.base import Prompt
from plush.server.llm.router import LlmRouter, Route
from plush.server.memory import Memory
from plush.server.persona import Persona, PersonaSource
from plush.server.safety import Flag
from plush.server.sentence_chunker import SentenceChunker, speakable
from plush.server.speculation import Speculation, TurnSpeculations
from plush.server.speech import SpeechOut
from plush.server.store import Store, TurnRecord
from plush.server.store.records import Outcome
from plush.server.turn_journal import TurnJournal
from plush.voice_models.opus import OpusEncoder
from plush.voice_models.tts import TtsError

log = get_logger(__name__)
Emit = Callable[[pb.TurnEvent], None]


@dataclass
class TurnTrace:
    """What a stored turn's listeners get besides its record: the prompt it was answered from and, when
    `Companion.keep_audio` is on, the reply's audio as it was sent."""

    prompt: Prompt | None = None
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Stage -> (start offset ms, duration ms) from the turn's start (the stored record keeps durations only)."""
    audio: list[bytes] = field(default_factory=list)
    audio_rate: int = 0
    audio_opus: bool = False


TurnListener = Callable[[TurnRecord, TurnTrace], None]


@dataclass
class Stopwatch:
    """Stage timings of a turn: stage -> (start offset ms, duration ms) from the turn's start."""

    t0: float = field(default_factory=time.perf_counter)
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)

    def now_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def record(self, stage: str, start_ms: float, end_ms: float | None = None) -> None:
        self.stages[stage] = (start_ms, (self.now_ms() if end_ms is None else end_ms) - start_ms)

    def durations(self) -> dict[str, float]:
        return {stage: round(duration, 1) for stage, (_, duration) in self.stages.items()}


@dataclass
class TurnRequestData:
    """A validated turn, ready for the brain."""

    turn_id: str
    conversation_id: str
    device_id: str
    source: str
    user_text: str
    language: str = ""
    want_audio: bool = True
    output_sample_rate: int = 0
    output_encoding: int = pb.AUDIO_ENCODING_PCM_S16LE
    clock: Stopwatch = field(default_factory=Stopwatch)
    stopped_because: str = ""
    """Set by whoever stops the turn before it ends by itself, just before it does (see `TurnRecord.ending`); a
    turn cancelled with nobody saying why lost its client (`client_hung_up`)."""
    owner: str = ""
    """Whose memory the turn reads and adds to (set by the transport from the caller, see plush/owners.py);
    empty means the device alone."""
    speculations: TurnSpeculations | None = None
    """The brain started on the plush's settled text before the release (see speculation.py), if any."""

    def __post_init__(self) -> None:
        self.owner = self.owner or device_owner(self.device_id)


class Companion:
    """The brain plus voice: persona, memory, LLM router, speech and the turn log."""

    def __init__(
        self,
        *,
        persona: PersonaSource,
        router: LlmRouter,
        memory: Memory,
        speech: SpeechOut | None,
    ) -> None:
        self.personas = persona
        self.router = router
        self.memory = memory
        self.store: Store = memory.store
        self.speech = speech
        self._writes: set[asyncio.Task[None]] = set()
        self.listeners: list[TurnListener] = []
        """Called with each turn once it is stored (the dashboard's live log and metrics); must not block."""
        self.keep_audio = False
        """Hand the reply's audio to the listeners (the owner chose to keep it, `[dashboard] keep_audio`)."""

    @property
    def persona(self) -> Persona:
        """The persona in use now (reloaded when its file changed)."""
        return self.personas.current()

    async def prompt_for(
        self, conversation_id: str, user_text: str, *, owner: str, persona: Persona | None = None
    ) -> Prompt:
        """System prompt + the persona's examples + the conversation's window + the owner's memory note + the new
        message; `persona` is the one the turn started with (default: the current one)."""
        persona = persona or self.persona
        prompt, _ = await self.memory.prompt(
            persona.system_prompt,
            conversation_id,
            user_text,
            owner=owner,
            speaker=persona.name,
            examples=persona.examples,
        )
        return prompt

    def speculate(self, turn: TurnRequestData, text: str) -> Speculation:
        """Start the brain on `text` before the turn is confirmed: the prompt (memory read, nothing learned) and
        the LLM up to its first piece, under the budget guard (see speculation.py). Nothing is said or stored."""
        persona = self.persona

        async def begin(route: Route) -> tuple[Prompt, AsyncGenerator[str]] | None:
            if persona.safety.check(text, "input") is not None:
                return None  # the real turn answers it with the calm line; no brain sees it
            prompt = await self.prompt_for(turn.conversation_id, text, owner=turn.owner, persona=persona)
            fallback = persona.spec.fallback_line
            stream = self.router.stream(
                prompt, route, fallback, client_id=turn.device_id, reserve=1, refused_line=persona.spec.refused_line
            )
            return prompt, stream

        return Speculation(text, begin)

    async def reply(self, turn: TurnRequestData) -> AsyncGenerator[pb.TurnEvent]:
        """Stream the reply's events; cancelling the consumer cancels the turn (stored as interrupted)."""
        events: asyncio.Queue[pb.TurnEvent | None] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(turn, events.put_nowait, lambda: events.put_nowait(None)))
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def store_unanswered(self, turn: TurnRequestData, outcome: Outcome, error: str = "") -> None:
        """Store a turn that ended before the brain was asked (abandoned, no speech, refused, failed STT)."""
        record = _record(turn, outcome=outcome, error=error)
        await _count_speculations(turn, record)
        if outcome == "interrupted":
            record.ending = turn.stopped_because or "client_hung_up"
        turn.clock.record("total", 0.0)
        record.timings = turn.clock.durations()
        level = log.warning if outcome in ("refused", "error") else log.info
        level("turn_done", turn_id=turn.turn_id, device_id=turn.device_id, outcome=outcome, error=error)
        await self._store(record, TurnTrace(stages=dict(turn.clock.stages)))

    async def wait_stored(self) -> None:
        """Wait until every turn write started so far has finished (before the store closes)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _produce(self, turn: TurnRequestData, send: Emit, finish: Callable[[], None]) -> None:
        record = _record(turn)
        journal = TurnJournal(self.store, record)  # stored from now on: a replica killed mid-turn loses no turn
        emit = _noting(send, journal, record)
        route = Route()
        trace = TurnTrace()
        persona = self.persona
        try:
            if (flag := persona.safety.check(turn.user_text, "input")) is not None:
                await self._refuse_input(
                    flag, turn, route=route, record=record, persona=persona, emit=emit, trace=trace
                )
                return
            await self.memory.learn(turn.conversation_id, turn.user_text, owner=turn.owner)
            prompt = await self.prompt_for(turn.conversation_id, turn.user_text, owner=turn.owner, persona=persona)
            trace.prompt = prompt
            route, deltas = adopted if (adopted := await _adopt(turn, prompt)) is not None else (route, None)
            pieces: asyncio.Queue[str | None] = asyncio.Queue()
            speaking = self.speech is not None and turn.want_audio
            async with asyncio.TaskGroup() as tasks:
                if speaking:
                    tasks.create_task(self._speak(turn, pieces, emit, record, trace))
                await self._think(
                    turn,
                    prompt,
                    route=route,
                    pieces=pieces,
                    emit=emit,
                    record=record,
                    persona=persona,
                    deltas=deltas,
                )
        except asyncio.CancelledError:
            record.outcome, record.ending = "interrupted", turn.stopped_because or "client_hung_up"
            raise
        except Exception as exc:  # any failure is reported to the client and stored, never lost
            log.exception("turn_failed", turn_id=turn.turn_id)
            while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:  # the speaker's task failed
                exc = exc.exceptions[0]
            message = f"{type(exc).__name__}: {exc}"
            record.outcome = "error"
            record.add_error(message)
            emit(_event(turn, error=pb.Error(code=pb.ERROR_CODE_INTERNAL, message=message)))
        finally:
            turn.clock.record("total", 0.0)
            await _count_speculations(turn, record)
            record.reply_text = record.reply_text.strip()
            record.backend, record.backend_reason = route.backend, route.reason
            record.prompt_tokens, record.output_tokens = route.usage.prompt_tokens, route.usage.output_tokens
            record.add_error(route.error)
            if route.failed and record.outcome == "answered":  # a brain broke off or crashed: said, but an error
                record.outcome = "error"
            record.timings = turn.clock.durations()
            trace.stages = dict(turn.clock.stages)
            await self._store(record, trace, after=journal)
            for stage, (start, duration) in turn.clock.stages.items():
                timing = pb.StageTiming(stage=stage, duration_ms=duration, started_at_ms=start)
                emit(_event(turn, timing=timing))
            done = pb.TurnDone(
                turn_id=turn.turn_id,
                backend=route.backend,
                backend_reason=route.reason,
                interrupted=record.interrupted,
            )
            emit(_event(turn, done=done))
            finish()
            log.info(
                "turn_done",
                turn_id=turn.turn_id,
                device_id=turn.device_id,
                backend=route.backend,
                reason=route.reason,
                outcome=record.outcome,
                **{f"{k}_ms": v for k, v in record.timings.items()},
            )

    async def _refuse_input(
        self,
        flag: Flag,
        turn: TurnRequestData,
        *,
        route: Route,
        record: TurnRecord,
        persona: Persona,
        emit: Emit,
        trace: TurnTrace,
    ) -> None:
        """What the owner said was flagged: no brain sees it and memory keeps nothing of it ("remember my password
        is ..."); the calm line is said instead."""
        route.backend, route.reason = "safety", flag.label
        lines = self._blocked(flag, turn, record, persona, emit)
        if self.speech is not None and turn.want_audio:
            await self._speak(turn, _queue_of(lines), emit, record, trace)

    async def _think(
        self,
        turn: TurnRequestData,
        prompt: Prompt,
        *,
        route: Route,
        pieces: asyncio.Queue[str | None],
        emit: Emit,
        record: TurnRecord,
        persona: Persona,
        deltas: AsyncGenerator[str] | None = None,
    ) -> None:
        """Stream the LLM's reply (or the adopted speculation's, `deltas`) and feed its checked pieces to the
        speaker.

        Text goes out (as deltas) and into `record` only once the piece it belongs to has passed the safety check,
        so an interrupted turn keeps what was already said, and a flagged piece is never shown or spoken: the
        stream is closed there and the persona's calm line follows what was said before it.
        """
        chunker = SentenceChunker()
        safety = persona.safety
        start = turn.clock.now_ms()
        received, released, previous = "", 0, ""

        def release(end: int) -> None:
            nonlocal released
            if end > released:
                text, released = received[released:end], end
                record.reply_text += text
                emit(_event(turn, text_delta=pb.ReplyText(text=text)))

        def passes(piece: str) -> bool:
            nonlocal previous
            # With the piece before it: a phrase cut at a comma is still read whole.
            if (flag := safety.check(f"{previous} {piece}", "output")) is not None:
                for line in self._blocked(flag, turn, record, persona, emit):
                    pieces.put_nowait(line)
                return False
            previous = piece
            at = received.find(piece, released)  # pieces are stripped slices of what was received
            release(at + len(piece) if at >= 0 else len(received))
            pieces.put_nowait(piece)
            return True

        try:
            # aclosing: a cancelled or flagged turn closes the stream now, so the backend stops generating at once.
            stream = deltas or self.router.stream(
                prompt,
                route,
                persona.spec.fallback_line,
                client_id=turn.device_id,
                refused_line=persona.spec.refused_line,
            )
            async with aclosing(stream) as reply:
                async for delta in reply:
                    if not received:
                        turn.clock.record("llm_first_token", start)
                    received += delta
                    if not all(passes(piece) for piece in chunker.feed(delta)):
                        break
                    release(len(received) - len(chunker.pending))
                else:
                    if (rest := chunker.flush()) is None or passes(rest):
                        release(len(received))
                    if route.blocked:  # Gemini's own filter stopped it: the same calm line as ours
                        for line in self._blocked(Flag(route.blocked, "gemini", ""), turn, record, persona, emit):
                            pieces.put_nowait(line)
            turn.clock.record("llm", start)
        finally:
            pieces.put_nowait(None)

    def _blocked(
        self, flag: Flag, turn: TurnRequestData, record: TurnRecord, persona: Persona, emit: Emit
    ) -> list[str]:
        """Mark the turn blocked, send the calm line instead (as text, now) and return its pieces for the speaker."""
        line = persona.safety.line(flag, turn.user_text, persona.language)
        record.outcome, record.safety = "blocked", flag.label
        text = f" {line}" if record.reply_text else line
        record.reply_text += text
        emit(_event(turn, text_delta=pb.ReplyText(text=text)))
        log.warning("turn_flagged", turn_id=turn.turn_id, device_id=turn.device_id, safety=flag.label)
        chunker = SentenceChunker()
        return [*chunker.feed(line), *filter(None, [chunker.flush()])]

    async def _speak(
        self,
        turn: TurnRequestData,
        pieces: asyncio.Queue[str | None],
        emit: Emit,
        record: TurnRecord,
        trace: TurnTrace,
    ) -> None:
        """Synthesize each finished piece in order and stream its audio chunks."""
        assert self.speech is not None
        opus = turn.output_encoding == pb.AUDIO_ENCODING_OPUS
        rate = self.speech.output_rate(turn.output_sample_rate, opus)
        encoder = OpusEncoder(rate) if opus else None
        encoding = pb.AUDIO_ENCODING_OPUS if opus else pb.AUDIO_ENCODING_PCM_S16LE
        seq = 0
        synth_ms = 0.0
        trace.audio_rate, trace.audio_opus = rate, opus
        spoken_by: set[str] = set()

        def send(data: bytes) -> None:
            nonlocal seq
            if seq == 0:
                turn.clock.record("first_audio", 0.0)
            chunk = pb.AudioChunk(data=data, sample_rate=rate, channels=1, encoding=encoding, seq=seq)
            emit(_event(turn, audio=chunk))
            if self.keep_audio:
                trace.audio.append(data)
            seq += 1

        while (piece := await pieces.get()) is not None:
            if not (piece := speakable(piece)):
                continue  # only emoji or markup: nothing to say
            started = turn.clock.now_ms()
            try:
                chunks = await self.speech.speak(piece, rate, encoder, spoken_by=spoken_by)
            except TtsError as exc:
                record.add_error(str(exc))
                emit(_event(turn, error=pb.Error(code=pb.ERROR_CODE_TTS_FAILED, message=str(exc))))
                continue
            synth_ms += turn.clock.now_ms() - started
            record.voices = ", ".join(sorted(spoken_by))
            for data in chunks:
                send(data)
        for data in await self.speech.finish(encoder):
            send(data)
        if seq:
            turn.clock.stages["tts"] = (turn.clock.stages["first_audio"][0], synth_ms)

    async def _store(
        self, record: TurnRecord, trace: TurnTrace | None = None, *, after: TurnJournal | None = None
    ) -> None:
        """Store the turn in a task of its own, tracked until written: a turn cancelled twice (barge-in, then the
        client hanging up) is still stored, and shutdown waits for it (`wait_stored`) before closing the store.
        The turn's end is written after the writes of its journal (`after`), so it replaces its row under way."""
        write = asyncio.create_task(self._write(record, trace or TurnTrace(), after), name=f"plush-store-{record.id}")
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await asyncio.shield(write)

    async def _write(self, record: TurnRecord, trace: TurnTrace, after: TurnJournal | None) -> None:
        try:
            if after is not None:
                await after.settled()
            await self.store.add_turn(record)
        except Exception:  # the reply already went out; a failed write must not break the stream
            log.exception("turn_not_stored", turn_id=record.id, outcome=record.outcome)
            return
        for listener in self.listeners:
            try:
                listener(record, trace)
            except Exception:  # a listener (the dashboard) must never lose a turn or break the reply
                log.exception("turn_listener_failed", turn_id=record.id)


def _record(turn: TurnRequestData, outcome: Outcome = "answered", error: str = "") -> TurnRecord:
    """The turn's log entry, before its reply (if any) is known."""
    return TurnRecord(
        id=turn.turn_id,
        conversation_id=turn.conversation_id,
        device_id=turn.device_id,
        source=turn.source,
        user_text=turn.user_text,
        language=turn.language,
        owner=turn.owner,
        outcome=outcome,
        error=error,
    )


async def _adopt(turn: TurnRequestData, prompt: Prompt) -> tuple[Route, AsyncGenerator[str]] | None:
    """The speculation this turn adopts (its route and its deltas), or None: the brain starts now."""
    if turn.speculations is None or (speculation := turn.speculations.take(turn.user_text)) is None:
        return None
    deltas = await speculation.adopt(prompt)
    log.info("speculation", turn_id=turn.turn_id, adopted=deltas is not None)
    return None if deltas is None else (speculation.route, deltas)


async def _count_speculations(turn: TurnRequestData, record: TurnRecord) -> None:
    """Into the record: what the turn's speculations cost (those not adopted are stopped first)."""
    if turn.speculations is None:
        return
    counts = await turn.speculations.counts()
    record.speculations, record.speculations_adopted = counts.started, counts.adopted
    record.speculations_wasted, record.speculation_gemini_requests = counts.wasted, counts.gemini_requests
    record.speculation_gemini_wasted = counts.gemini_wasted


def _noting(send: Emit, journal: TurnJournal, record: TurnRecord) -> Emit:
    """`send`, and each text that goes out into the turn's journal: what was said is in the store as it is said."""

    def emit(event: pb.TurnEvent) -> None:
        send(event)
        if event.HasField("text_delta"):
            journal.said(record.reply_text)

    return emit


def _queue_of(pieces: list[str]) -> asyncio.Queue[str | None]:
    """The pieces, ready for `_speak`, ended."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for piece in [*pieces, None]:
        queue.put_nowait(piece)
    return queue


def _event(turn: TurnRequestData, **kind: object) -> pb.TurnEvent:
    return pb.TurnEvent(turn_id=turn.turn_id, **kind)  # type: ignore[arg-type]
