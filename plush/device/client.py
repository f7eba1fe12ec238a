"""The gRPC client of the Plush server, shared by the plush and the text chat.

It opens one Converse stream per turn, keeps the request side open after TurnEnd so a barge-in can still send
Cancel, and turns gRPC failures into errors that say what to do (start the server, fix the request).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from plush import __version__
from plush.errors import PlushError
from plush.local_server import unreachable_hint
from plush.pairing import SERVER_NAME
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc

DEVICE_ID_KEY = "plush-device-id"
VERSION_KEY = "plush-version"
"""The client's version, shown on the server's dashboard (devices page)."""
AUDIO_FRAME_MS = 40
DEATH_CHECK_S = 1.0
"""How often a wait for a server on this computer looks whether it died."""


class ServerError(PlushError):
    """The server could not be reached or refused the request."""

    code: grpc.StatusCode | None = None
    """The call's gRPC status, when it ended with one (RESOURCE_EXHAUSTED: the server is busy, try again)."""


class UnreachableError(ServerError):
    """The server cannot be reached (down, restarting, network gone): worth trying again later."""


class AuthError(ServerError):
    """The server does not accept this plush's token: retrying cannot help until the token is fixed."""


def predates_settled(exc: BaseException) -> bool:
    """Whether a turn was refused by a server older than the `Settled` message (it sees a request with no field
    it knows, "unexpected 'None' message"): such a server is asked at release only."""
    return isinstance(exc, ServerError) and exc.code == grpc.StatusCode.INVALID_ARGUMENT and "unexpected" in str(exc)


def describe_rpc_error(exc: grpc.aio.AioRpcError, target: str) -> ServerError:
    """A message a user can act on for a failed RPC, carrying its status code."""
    error = _describe(exc, target)
    error.code = exc.code()
    return error


def _describe(exc: grpc.aio.AioRpcError, target: str) -> ServerError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return _unavailable(exc.details() or "", target)
    if code == grpc.StatusCode.CANCELLED:  # not by us (a barge-in stops reading first): the server went down
        return UnreachableError(f"the Plush server at {target} stopped in the middle of the turn")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthError(f"the Plush server at {target} refused this plush: {exc.details()}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServerError(f"the Plush server at {target} did not answer in time")
    return ServerError(f"the server refused the turn ({code.name}): {exc.details()}")


def _unavailable(details: str, target: str) -> ServerError:
    """UNAVAILABLE covers a TLS mismatch, a server going down and one that is not there."""
    if "handshake failed" in details.lower():
        return AuthError(
            f"the TLS handshake with the Plush server at {target} failed: it does not show the certificate this "
            "plush was paired with (or does not speak TLS). If the server was set up anew, pair again with "
            "`plush pair join CODE`"
        )
    if "shutting down" in details:
        return UnreachableError(f"the Plush server at {target} is shutting down")
    return UnreachableError(f"cannot reach the Plush server at {target}: {unreachable_hint(target).text}")


class ConverseCall:
    """One turn in flight: send its audio as it is recorded, end it, read its events, or cancel it (barge-in)."""

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target
        self._seq = 0

    async def _write(self, request: pb.TurnRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as exc:
            raise describe_rpc_error(exc, self._target) from exc
        except asyncio.InvalidStateError as exc:
            # The server already ended the call (a refusal, a deadline): its status says why, not "finished".
            code, details = await self._call.code(), await self._call.details()
            raise describe_rpc_error(grpc.aio.AioRpcError(code, None, None, details), self._target) from exc

    async def send_transcript(self, text: str, language: str = "") -> None:
        await self._write(pb.TurnRequest(transcript=pb.Transcript(text=text, language=language, final=True)))

    async def send_settled(self, text: str, language: str = "") -> None:
        """The button is still held and the phrase so far has settled: the server may start on it (empty: the owner
        spoke on, drop what was started)."""
        await self._write(pb.TurnRequest(settled=pb.Settled(text=text, language=language)))

    async def send_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Send mono s16le in frames of AUDIO_FRAME_MS (the server may transcribe them as they arrive)."""
        step = sample_rate * AUDIO_FRAME_MS // 1000 * 2
        for offset in range(0, len(pcm), step):
            chunk = pb.AudioChunk(
                data=pcm[offset : offset + step],
                sample_rate=sample_rate,
                channels=1,
                encoding=pb.AUDIO_ENCODING_PCM_S16LE,
                seq=self._seq,
            )
            self._seq += 1
            await self._write(pb.TurnRequest(audio=chunk))

    async def end(self) -> None:
        """The owner is done speaking: the server answers now."""
        await self._write(pb.TurnRequest(end=pb.TurnEnd()))

    async def events(self) -> AsyncIterator[pb.TurnEvent]:
        try:
            while (event := await self._call.read()) is not grpc.aio.EOF:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise describe_rpc_error(exc, self._target) from exc

    async def playback_started(self) -> None:
        """Tell the server the reply is being heard now (its `first_audio_played` milestone); best effort."""
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            await self._call.write(pb.TurnRequest(playback_started=pb.PlaybackStarted()))

    async def done_writing(self) -> None:
        """Nothing more from the plush on this turn (the server stops waiting for a playback report)."""
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            await self._call.done_writing()

    async def cancel(self, reason: str = "barge-in") -> None:
        """Ask the server to stop this turn; further events are not read."""
        try:
            await self._call.write(pb.TurnRequest(cancel=pb.Cancel(reason=reason)))
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the turn is already over (InvalidStateError: the server ended it, e.g. it went down)
        self._call.cancel()


class CompanionClient:
    """A channel to the server; use as `async with CompanionClient(target, device_id) as client:`."""

    def __init__(
        self,
        target: str,
        device_id: str,
        *,
        token: str | None = None,
        max_message_mb: float = 4.0,
        pinned_cert: bytes | None = None,
    ) -> None:
        """`pinned_cert`: the server certificate (PEM) pinned at pairing; with it the channel is TLS and trusts
        that certificate only, so the token never crosses the network in the clear."""
        self.target = target
        self.device_id = device_id
        size = int(max_message_mb * 1024 * 1024)
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
        ]
        if pinned_cert is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            # The pinned certificate is the only root: no CA can stand in for the server. Its fixed name is checked
            # whatever address the plush dials, since a home server's address changes and its certificate does not.
            credentials = grpc.ssl_channel_credentials(root_certificates=pinned_cert)
            options.append(("grpc.ssl_target_name_override", SERVER_NAME))
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.CompanionStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = ((DEVICE_ID_KEY, device_id), (VERSION_KEY, __version__))
        if token:
            self._metadata += (("authorization", f"Bearer {token}"),)

    async def __aenter__(self) -> CompanionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the channel connects, or fail with a message naming the server address.

        A server on this computer that died while we wait ends the wait at once, and the message tells a server
        still loading its models from one that died (`local_server`).
        """
        ready = asyncio.ensure_future(self._channel.channel_ready())
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while not ready.done():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 or (hint := unreachable_hint(self.target)).died:
                    break
                await asyncio.wait({ready}, timeout=min(left, DEATH_CHECK_S))
        finally:
            connected = ready.done()
            ready.cancel()
        if not connected:
            hint = unreachable_hint(self.target)
            within = "" if hint.died else f" within {timeout_s:g} s"
            raise UnreachableError(f"cannot reach the Plush server at {self.target}{within}: {hint.text}")

    async def start_turn(self, start: pb.TurnStart) -> ConverseCall:
        """Open a Converse stream and send TurnStart; audio or a transcript follows, then `end()`."""
        call = ConverseCall(self._stub.Converse(metadata=self._metadata), self.target)
        await call._write(pb.TurnRequest(start=start))
        return call

    async def converse(
        self,
        start: pb.TurnStart,
        *,
        transcript: str | None = None,
        pcm: bytes | None = None,
        sample_rate: int = 16000,
    ) -> ConverseCall:
        """A whole turn at once: the device's transcript, or recorded audio for the server to transcribe."""
        call = await self.start_turn(start)
        if transcript is not None:
            await call.send_transcript(transcript)
        if pcm is not None:
            await call.send_audio(pcm, sample_rate)
        await call.end()
        return call

    async def phrases(self, output_sample_rate: int = 0) -> pb.PhrasesReply:
        """The persona's phrases for when the server is unreachable (fetched while it is reachable)."""
        try:
            reply: pb.PhrasesReply = await self._stub.Phrases(
                pb.PhrasesRequest(output_sample_rate=output_sample_rate), metadata=self._metadata, timeout=60
            )
        except grpc.aio.AioRpcError as exc:
            raise describe_rpc_error(exc, self.target) from exc
        return reply

    async def chat(
        self,
        text: str,
        *,
        conversation_id: str = "",
        want_audio: bool = False,
        output_encoding: pb.AudioEncoding = pb.AUDIO_ENCODING_PCM_S16LE,
    ) -> AsyncIterator[pb.TurnEvent]:
        """Send a text message and stream the reply's events."""
        request = pb.ChatRequest(
            text=text, conversation_id=conversation_id, want_audio=want_audio, output_encoding=output_encoding
        )
        try:
            async for event in self._stub.Chat(request, metadata=self._metadata):
                yield event
        except grpc.aio.AioRpcError as exc:
            raise describe_rpc_error(exc, self.target) from exc
