"""One spoken (or transcribed) turn read off its Converse stream, up to TurnEnd, with the contract's checks.

Protocol mistakes (no TurnStart first, an unsupported audio format, too much audio, an empty turn, an oversized
message) end the turn as refused, with INVALID_ARGUMENT or RESOURCE_EXHAUSTED and a message saying what was
wrong. Reading has deadlines, so no stream holds the server's resources longer than a turn can take: nothing
for `idle_timeout_s` before TurnEnd, or no TurnEnd within `max_audio_seconds + idle_timeout_s` of TurnStart,
ends the turn (DEADLINE_EXCEEDED) as abandoned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.contract_limits import LIMITS, Undecodable, string_problem
from plush.server.store.records import Outcome
from plush.voice_models.audio import WHISPER_RATE, PcmResampleStream
from plush.voice_models.streaming_stt import StreamingTranscription

MIN_RATE, MAX_RATE = 8000, 48000
MAX_CONVERSATION_ID = LIMITS["TurnStart.conversation_id"]
"""Characters a client may use to name a conversation (the name is stored with every turn and every prompt)."""


RECEIVE_HEADROOM = 4
"""gRPC itself refuses only messages this many times over `server.max_message_mb`: below that the service reads
them and refuses them with a status the client can read (grpc-python's asyncio client gets `INTERNAL` when the
transport refuses a message it is still writing after; see refusals.py)."""


@dataclass(frozen=True)
class Limits:
    """What one turn may carry, and how long it may take to arrive."""

    max_audio_seconds: float
    idle_timeout_s: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024

    @property
    def transport_bytes(self) -> int:
        """The largest message gRPC hands the service at all (`grpc.max_receive_message_length`)."""
        return self.max_message_bytes * RECEIVE_HEADROOM


class TurnEndedError(Exception):
    """A turn that ends without a reply: the status its client gets and the outcome it is stored with.

    `client_done` says the client has nothing more to send (it sent TurnEnd, closed, or the stream was cut), so
    there is nothing to drain before the status goes out.
    """

    def __init__(self, code: grpc.StatusCode, message: str, outcome: Outcome, *, client_done: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.outcome = outcome
        self.client_done = client_done


def protocol_error(message: str, *, client_done: bool = False) -> TurnEndedError:
    """A request that breaks the contract: INVALID_ARGUMENT, stored as refused."""
    return TurnEndedError(grpc.StatusCode.INVALID_ARGUMENT, message, "refused", client_done=client_done)


class TurnRequests:
    """A turn's request stream, read under its deadlines (until TurnEnd) and its message size limit."""

    def __init__(self, requests: AsyncIterator[pb.TurnRequest], limits: Limits) -> None:
        self.stream = requests
        self.limits = limits
        self._within_s = limits.max_audio_seconds + limits.idle_timeout_s
        self._deadline = asyncio.get_running_loop().time() + self._within_s

    def time_left(self) -> float:
        """Seconds until the turn's deadline (`max_audio_seconds` + `idle_timeout_s` after TurnStart)."""
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def next(self) -> pb.TurnRequest | None:
        """The next request, or None when the client closed its side; TurnEndedError when a deadline passed.

        A read cut by a deadline leaves the stream unreadable (grpc ends its iterator), hence `client_done`.
        """
        left = self._deadline - asyncio.get_running_loop().time()
        idle = self.limits.idle_timeout_s
        try:
            async with asyncio.timeout(max(0.0, min(idle, left))):
                request = await anext(self.stream, None)
        except TimeoutError:
            message = (
                f"nothing arrived for {idle:g} s before TurnEnd (server.idle_timeout_s); the turn was dropped"
                if idle <= left
                else f"no TurnEnd within {self._within_s:g} s of TurnStart; the turn was dropped"
            )
            raise TurnEndedError(grpc.StatusCode.DEADLINE_EXCEEDED, message, "abandoned", client_done=True) from None
        if isinstance(request, Undecodable):
            raise protocol_error(request.problem)
        if request is not None and (size := request.ByteSize()) > self.limits.max_message_bytes:
            raise TurnEndedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a message of {size / 2**20:.1f} MiB is over this server's {self.limits.max_message_bytes / 2**20:g} "
                "MiB limit (server.max_message_mb); send audio in 20-40 ms chunks",
                "refused",
            )
        if request is not None and (problem := string_problem(request)) is not None:
            raise protocol_error(problem)
        return request


StartTranscription = Callable[[int], StreamingTranscription | None]
"""Called at a turn's first audio chunk with its sample rate: reserves the server's speech recognition for the
turn (raising TurnEndedError when it cannot) and returns a streaming transcription to feed, or None to transcribe
the whole recording at TurnEnd."""


@dataclass
class Utterance:
    """What the device sent before TurnEnd."""

    start: pb.TurnStart
    transcript: str | None = None
    transcript_language: str = ""
    """The language the device's own STT heard (a plush that opened the turn before it knew sends it here)."""
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

    def add_audio(self, chunk: pb.AudioChunk, limits: Limits, start_transcription: StartTranscription) -> None:
        """Check and keep an audio chunk, feeding it to streaming STT; TurnEndedError when it breaks the contract."""
        if chunk.encoding not in pb.AudioEncoding.values():  # proto3 enums are open: any number arrives
            raise protocol_error(f"unknown audio encoding {chunk.encoding}; send PCM_S16LE")
        if chunk.encoding not in (pb.AUDIO_ENCODING_UNSPECIFIED, pb.AUDIO_ENCODING_PCM_S16LE):
            raise protocol_error(f"unsupported audio encoding {pb.AudioEncoding.Name(chunk.encoding)}; send PCM_S16LE")
        if chunk.channels not in (0, 1):
            raise protocol_error(f"unsupported channel count {chunk.channels}; send mono audio")
        if not MIN_RATE <= chunk.sample_rate <= MAX_RATE:
            raise protocol_error(
                f"unsupported sample rate {chunk.sample_rate} Hz; send {MIN_RATE}-{MAX_RATE} Hz (16000 is best)"
            )
        if self.pcm is None:
            self.transcription = start_transcription(chunk.sample_rate)
            if self.transcription is not None:
                self.resample = PcmResampleStream(chunk.sample_rate, WHISPER_RATE)
            self.pcm, self.sample_rate = bytearray(), chunk.sample_rate
        elif chunk.sample_rate != self.sample_rate:
            raise protocol_error(f"sample rate changed mid-turn from {self.sample_rate} to {chunk.sample_rate}")
        if len(chunk.data) % 2:
            raise protocol_error("PCM_S16LE audio must have an even number of bytes")
        self.pcm.extend(chunk.data)
        if len(self.pcm) / (2 * self.sample_rate) > limits.max_audio_seconds:
            raise protocol_error(f"audio is longer than the {limits.max_audio_seconds:g} s maximum for a turn")
        if self.transcription is not None and self.resample is not None:
            self.transcription.feed(self.resample.feed(chunk.data))


async def read_utterance(
    requests: TurnRequests,
    start: pb.TurnStart,
    start_transcription: StartTranscription,
    on_settled: Callable[[pb.Settled], None] | None = None,
) -> Utterance:
    """The messages after TurnStart, up to TurnEnd or Cancel; TurnEndedError when the turn cannot go on.

    Settled (the plush's transcript so far, while the button is held) goes to `on_settled`; without one it is
    read and dropped, as it is optional."""
    utterance = Utterance(start=start)
    try:
        while (request := await requests.next()) is not None:
            kind = request.WhichOneof("kind")
            if kind == "audio":
                utterance.add_audio(request.audio, requests.limits, start_transcription)
            elif kind == "transcript":
                utterance.transcript = request.transcript.text.strip()
                utterance.transcript_language = request.transcript.language.strip()
            elif kind == "settled":
                if on_settled is not None:
                    on_settled(request.settled)
            elif kind in ("end", "cancel"):
                utterance.ended, utterance.cancelled = kind == "end", kind == "cancel"
                break
            else:
                raise protocol_error(f"unexpected '{kind}' message inside a turn")
        if utterance.cancelled:
            return utterance
        if not utterance.ended:
            # gRPC ends the stream the same way when it refuses a message over the transport limit (it answers
            # the client RESOURCE_EXHAUSTED itself and never tells the service), so the stored reason names both.
            raise TurnEndedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request stream closed before TurnEnd: the client closed its side, or sent a message over the "
                f"server's {requests.limits.transport_bytes / 2**20:g} MiB transport limit, which gRPC refuses "
                "before the server reads it (send audio in 20-40 ms chunks); the turn was dropped",
                "abandoned",
                client_done=True,
            )
        if utterance.transcript is None and not utterance.pcm:
            raise protocol_error("empty turn: no audio and no transcript before TurnEnd", client_done=True)
        if utterance.transcript is not None and utterance.pcm:
            raise protocol_error("a turn carries audio or a transcript, not both", client_done=True)
    except BaseException:
        utterance.drop_transcription()
        raise
    return utterance


def output_problem(sample_rate: int, encoding: int) -> str | None:
    """What is wrong with the reply format a client asked for, or None."""
    if encoding not in pb.AudioEncoding.values():
        return f"unknown output encoding {encoding}; ask for PCM_S16LE or OPUS"
    if sample_rate and not MIN_RATE <= sample_rate <= MAX_RATE:
        return f"unsupported output sample rate {sample_rate} Hz; ask for {MIN_RATE}-{MAX_RATE} Hz (or 0)"
    return None


def conversation_problem(conversation_id: str) -> str | None:
    """What is wrong with the conversation name a client gave, or None."""
    if len(conversation_id) > MAX_CONVERSATION_ID:
        return f"conversation_id is {len(conversation_id)} characters; at most {MAX_CONVERSATION_ID}"
    return None
