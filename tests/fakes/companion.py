"""A scripted Companion server on 127.0.0.1: the plush's gRPC peer for replies the real server never sends.

Why: the plush must cope with a reply that breaks off half way (the server's speech failed) or carries an Opus
chunk that does not decode, and with very long chunks; the real server cannot be made to send those on cue. This
peer speaks the same contract (plush.v1.Companion) over real gRPC: it reads the turn up to TurnEnd, then streams
the scripted events and, if told to, ends the call with an error status. It runs in its own threads, so sync and
async tests can use it alike.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc

from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc
from plush.voice_models.opus import OpusEncoder, pack_packets

__all__ = ["ScriptedCompanion", "broken_opus_chunk", "opus_chunks", "pcm_chunks", "text"]


def text(delta: str) -> pb.TurnEvent:
    return pb.TurnEvent(text_delta=pb.ReplyText(text=delta))


def pcm_chunks(pcm: bytes, rate: int, seconds: float) -> list[pb.TurnEvent]:
    """Mono s16le as audio events of `seconds` each."""
    step = round(rate * seconds) * 2
    return [
        pb.TurnEvent(
            audio=pb.AudioChunk(
                data=pcm[i : i + step], sample_rate=rate, channels=1, encoding=pb.AUDIO_ENCODING_PCM_S16LE, seq=n
            )
        )
        for n, i in enumerate(range(0, len(pcm), step))
    ]


def opus_chunks(pcm: bytes, rate: int, seconds: float) -> list[pb.TurnEvent]:
    """Mono s16le at an Opus rate, encoded by one encoder, as audio events of about `seconds` each."""
    encoder = OpusEncoder(rate)
    packets = encoder.encode(pcm) + encoder.flush()
    per_chunk = max(1, round(seconds / 0.02))
    return [
        pb.TurnEvent(
            audio=pb.AudioChunk(
                data=pack_packets(packets[i : i + per_chunk]),
                sample_rate=rate,
                channels=1,
                encoding=pb.AUDIO_ENCODING_OPUS,
                seq=n,
            )
        )
        for n, i in enumerate(range(0, len(packets), per_chunk))
    ]


def broken_opus_chunk(rate: int) -> pb.TurnEvent:
    """An OPUS chunk whose packet claims 16 bytes but carries 3: it cannot be decoded."""
    data = b"\x00\x10abc"
    return pb.TurnEvent(
        audio=pb.AudioChunk(data=data, sample_rate=rate, channels=1, encoding=pb.AUDIO_ENCODING_OPUS, seq=99)
    )


class _Servicer(pb_grpc.CompanionServicer):
    def __init__(self, owner: ScriptedCompanion) -> None:
        self._owner = owner

    def Converse(self, request_iterator: Iterator[pb.TurnRequest], context: Any) -> Iterator[pb.TurnEvent]:  # noqa: N802
        owner = self._owner
        with owner._lock:
            owner.converse_calls += 1
        for request in request_iterator:
            kind = request.WhichOneof("kind")
            if owner.before_settled and kind == "settled":
                with owner._lock:
                    owner.refused_settled += 1
                # A server from before Settled sees no field it knows, in the old server's own words.
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unexpected 'None' message inside a turn")
            if kind in ("end", "cancel"):
                break
        # Like the real server, keep reading what the plush sends during the reply (its PlaybackStarted), and let
        # it close its side before ending: a server that ends while the client still writes loses unread events.
        rest = threading.Thread(target=_read_out, args=(request_iterator,), daemon=True)
        rest.start()
        for event in owner.events:
            if not context.is_active():
                return
            yield event
            time.sleep(owner.pause_s)
        rest.join(timeout=1.0)
        if owner.fail_with is not None:
            context.abort(grpc.StatusCode.INTERNAL, owner.fail_with)


def _read_out(requests: Iterator[pb.TurnRequest]) -> None:
    """Read what the plush still sends; the call ending (the plush hung up, a barge-in) ends the reading."""
    with contextlib.suppress(grpc.RpcError):
        for _ in requests:
            pass


class ScriptedCompanion:
    """`with ScriptedCompanion(events, fail_with="...") as peer:` serves on `peer.address` until the block ends.

    Each Converse gets `events` (with `pause_s` after each), then the error `fail_with` (INTERNAL) if given.
    `before_settled` makes it a server older than the `Settled` message.
    """

    def __init__(
        self,
        events: Sequence[pb.TurnEvent],
        *,
        fail_with: str | None = None,
        pause_s: float = 0.0,
        before_settled: bool = False,
    ) -> None:
        self.events = list(events)
        self.fail_with = fail_with
        self.pause_s = pause_s
        self.before_settled = before_settled
        """Speak the contract as servers did before `Settled`: a turn that sends one is refused."""
        self.converse_calls = 0
        self.refused_settled = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_CompanionServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedCompanion:
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=None)
