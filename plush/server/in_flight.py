"""The turns this server is working on: who may start one, the bound on speech recognition, and shutdown.

Both RPCs (Converse, Chat) admit their turn here, so one place knows what is running: past
`server.max_turns_in_flight` turns a new one is refused at once (RESOURCE_EXHAUSTED) rather than queued behind
the others; a plush that starts a new turn stops its own older one (a plush has one voice and one button); past
`server.max_stt_in_flight` utterances transcribed on the server, a new spoken turn is refused, so audio never
piles up in front of Whisper. At shutdown every turn is stopped and the server waits until each one has ended
(and been stored) before the store closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc

from plush.errors import PlushError
from plush.logs import get_logger

log = get_logger(__name__)


class AdmissionError(PlushError):
    """A turn the server will not take now; `code` is the gRPC status the client gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class StopReason(Enum):
    """Why the server stopped a turn before it ended by itself: the status and message its client gets."""

    SHUTDOWN = (grpc.StatusCode.UNAVAILABLE, "the Plush server is shutting down; the turn was stopped")
    SUPERSEDED = (grpc.StatusCode.ABORTED, "a newer turn from this plush replaced this one")
    REVOKED = (
        grpc.StatusCode.UNAUTHENTICATED,
        "this plush's pairing was removed (`plush pair remove`) or its token revoked; the turn was stopped",
    )

    @property
    def code(self) -> grpc.StatusCode:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


@dataclass(eq=False)
class Slot:
    """One admitted turn: the task serving it (cancelled to stop it) and why it was stopped, if it was."""

    turn_id: str
    device_id: str
    task: asyncio.Task[Any]
    stopped: StopReason | None = None
    holds_stt: bool = False
    on_stop: Callable[[StopReason], None] | None = None
    """Told why, just before the turn's task is cancelled (so the stored turn can say it)."""
    allowed: Callable[[], bool] | None = None
    """Whether the caller's token is still accepted (None: the server checks no tokens)."""

    def stop(self, reason: StopReason) -> None:
        """Cancel the turn's task once; its handler reads `stopped` to tell the client why."""
        if self.stopped is None:
            self.stopped = reason
            if self.on_stop is not None:
                self.on_stop(reason)
            self.task.cancel()


class TurnsInFlight:
    """Admission and shutdown for every turn; one per server."""

    def __init__(self, max_turns: int, max_stt: int) -> None:
        self.max_turns = max_turns
        self.max_stt = max_stt
        self.closing = False
        self._slots: set[Slot] = set()
        self._by_device: dict[str, Slot] = {}
        self._stt_in_use = 0
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def count(self) -> int:
        """Turns admitted and not yet ended (stopped ones included until they have been stored)."""
        return len(self._slots)

    def admit(self, turn_id: str, device_id: str, *, one_per_device: bool) -> Slot:
        """Take the calling task's turn in, or raise AdmissionError. With `one_per_device`, the device's older
        turn (if one is still open) is stopped first: its owner has moved on to this one."""
        if self.closing:
            raise AdmissionError(
                grpc.StatusCode.UNAVAILABLE, "the Plush server is shutting down; try again when it is back"
            )
        task = asyncio.current_task()
        assert task is not None, "admit() runs inside the RPC's task"
        if one_per_device and (older := self._by_device.get(device_id)) is not None:
            log.info("turn_superseded", turn_id=older.turn_id, by=turn_id, device_id=device_id)
            older.stop(StopReason.SUPERSEDED)
        running = sum(1 for slot in self._slots if slot.stopped is None)
        if running >= self.max_turns:
            log.warning("turn_refused", turn_id=turn_id, device_id=device_id, reason="max_turns_in_flight")
            raise AdmissionError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is busy with {running} turns (server.max_turns_in_flight); try again in a moment",
            )
        slot = Slot(turn_id, device_id, task)
        self._slots.add(slot)
        if one_per_device:
            self._by_device[device_id] = slot
        self._empty.clear()
        return slot

    def release(self, slot: Slot) -> None:
        """The turn has ended and been stored (or refused): its place is free."""
        self.release_stt(slot)
        self._slots.discard(slot)
        if self._by_device.get(slot.device_id) is slot:
            del self._by_device[slot.device_id]
        if not self._slots:
            self._empty.set()

    def take_stt(self, slot: Slot) -> None:
        """Reserve a place in server-side speech recognition for the turn's audio, or raise AdmissionError."""
        if slot.holds_stt:
            return
        if self._stt_in_use >= self.max_stt:
            log.warning("turn_refused", turn_id=slot.turn_id, device_id=slot.device_id, reason="max_stt_in_flight")
            raise AdmissionError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"speech recognition on the server is busy with {self._stt_in_use} utterances "
                "(server.max_stt_in_flight); try again in a moment, or transcribe on the plush",
            )
        self._stt_in_use += 1
        slot.holds_stt = True

    def release_stt(self, slot: Slot) -> None:
        """The turn's audio is transcribed (or dropped): another utterance may take its place."""
        if slot.holds_stt:
            slot.holds_stt = False
            self._stt_in_use -= 1

    def stop_revoked(self) -> int:
        """Stop every turn whose caller's token is no longer accepted (a plush unpaired mid-turn); how many."""
        revoked = [s for s in self._slots if s.stopped is None and s.allowed is not None and not s.allowed()]
        for slot in revoked:
            log.warning("turn_revoked", turn_id=slot.turn_id, device_id=slot.device_id)
            slot.stop(StopReason.REVOKED)
        return len(revoked)

    async def shutdown(self, timeout_s: float) -> None:
        """Refuse new turns, stop every turn in flight and wait (up to `timeout_s`) until each has ended."""
        self.closing = True
        if self._slots:
            log.info("stopping_turns", turns=len(self._slots))
        for slot in list(self._slots):
            slot.stop(StopReason.SHUTDOWN)
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            log.warning("turns_still_running", turns=[slot.turn_id for slot in self._slots])
