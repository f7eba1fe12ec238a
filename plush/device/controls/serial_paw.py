"""The paw board over USB serial: its button presses in, the plush's state out to its LEDs.

The board is found by its configured port or by the USB vendor id of the boards the firmware supports, and
proven by its HELLO. A heartbeat (PING every `ping_every_s`) notices a board that stopped answering; a read error
means it was unplugged. Either way the plush keeps running: the board is looked for again with exponential
backoff and jitter, greeted, and shown the current state, and a button that was down when the cable went is
released. Garbage bytes and over-long lines are dropped and counted, never a crash. The port scan and every
read and write run in threads: a wedged USB link (writes wait up to their 0.5 s timeout) never stalls the event
loop, so the plush's audio and turn go on whatever the board does.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from plush.device.controls import paw_protocol as proto
from plush.device.controls.base import ButtonEvent, QueuedControls
from plush.errors import PlushError
from plush.logs import get_logger

log = get_logger(__name__)

KNOWN_USB_VIDS: Final = {
    0x2E8A: "Raspberry Pi (RP2040, e.g. Seeed XIAO RP2040)",
    0x2886: "Seeed Studio",
    0x2341: "Arduino",
    0x1A86: "CH340 USB-serial (Arduino Nano clones)",
    0x0403: "FTDI USB-serial",
    0x10C4: "CP210x USB-serial",
}
_LOST: Final = object()
_QUIET: Final = object()


class SerialBoardError(PlushError):
    """The paw board cannot be found or does not speak the Plush protocol."""


def find_paw_port(configured: str | None) -> str | None:
    """The configured port if it exists, else the first serial port whose USB vendor is a supported board's."""
    if configured:
        return configured if Path(configured).exists() else None
    from serial.tools import list_ports

    for port in list_ports.comports():
        if port.vid in KNOWN_USB_VIDS:
            return str(port.device)
    return None


def _serial_module() -> Any:
    try:
        import serial
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise SerialBoardError("the serial paw board needs pyserial: pip install 'plush[device]'") from exc
    return serial


class SerialPaw(QueuedControls):
    """The paw board: `await start()`, then read `events()` and call `show()`; `await aclose()` at the end."""

    def __init__(
        self,
        port: str | None = None,
        *,
        ping_every_s: float = 2.0,
        silence_limit_s: float = 6.0,
        hello_timeout_s: float = 2.0,
        max_backoff_s: float = 5.0,
        finder: Callable[[str | None], str | None] = find_paw_port,
    ) -> None:
        super().__init__()
        self.port = port
        self.ping_every_s = ping_every_s
        self.silence_limit_s = silence_limit_s
        self.hello_timeout_s = hello_timeout_s
        self.max_backoff_s = max_backoff_s
        self._finder = finder
        self._serial_lib = _serial_module()
        self._ready = asyncio.Event()
        self._led = "idle"
        self._pressed = False
        self._closing = False
        self._writes: queue.SimpleQueue[bytes | None] | None = None
        """Lines for the board, written by the session's writer thread (None: not connected)."""
        self._supervisor: asyncio.Task[None] | None = None
        self.version = ""
        self.noise = 0
        """Lines from the board that were not protocol messages (garbage on the wire, over-long lines)."""
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def start(self, timeout_s: float = 5.0, *, required: bool = True) -> None:
        """Find the board and wait for its greeting. When it does not answer in time: with `required`, a
        SerialBoardError; without, the search goes on in the background (a plush that boots before its paw
        board is plugged in works once it is)."""
        self._supervisor = asyncio.create_task(self._supervise(), name="plush-serial-paw")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError as exc:
            if not required:
                log.warning("paw_board_not_found_yet", port=self.port or "auto", waiting=True)
                return
            await self.aclose()
            where = self.port or "any USB serial port of a supported board"
            raise SerialBoardError(
                f"no Plush paw board answered on {where} within {timeout_s:g} s: is it plugged in and flashed "
                '(hardware/firmware/README.md)? Set [device] serial_port, or use button = "keyboard"'
            ) from exc

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    def show(self, state: str) -> None:
        self._led = state
        self._write(proto.led(state))

    async def aclose(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._events.put_nowait(ButtonEvent.QUIT)

    # -- the connection --------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = 0.2
        while not self._closing:
            port = await asyncio.to_thread(self._finder, self.port)  # a scan of the USB serial devices
            if port is not None:
                try:
                    await self._session(port)
                    backoff = 0.2  # it worked for a while: a replugged board is looked for quickly
                except (SerialBoardError, OSError, self._serial_lib.SerialException) as exc:
                    log.warning("paw_board_unusable", port=port, error=str(exc))
                except Exception:  # a bug must not end the search for the board for good
                    log.exception("paw_board_session_crashed", port=port)
            self._lost()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # jitter: no lock-step retries
            backoff = min(backoff * 2, self.max_backoff_s)

    def _lost(self) -> None:
        if self._ready.is_set():
            log.warning("paw_board_lost", port=self.port)
        self._ready.clear()
        if self._pressed:  # the cable went while the button was down: end that press
            self._pressed = False
            self._events.put_nowait(ButtonEvent.UP)

    async def _session(self, port: str) -> None:
        """One connection: greet, then relay lines and keep the heartbeat until the board is lost."""
        # write_timeout: a wedged USB link must not hold the writer thread (and the session's end) for long.
        device = await asyncio.to_thread(
            self._serial_lib.Serial, port, proto.BAUD_RATE, timeout=0.05, write_timeout=0.5
        )
        lines: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        writes: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        reader = threading.Thread(target=self._read, args=(device, lines, stop), name="plush-paw-reader", daemon=True)
        writer = threading.Thread(target=self._write_all, args=(device, writes), name="plush-paw-writer", daemon=True)
        self._writes = writes
        reader.start()
        writer.start()
        try:
            await self._greet(port, lines)
            await self._relay(lines)
        finally:
            self._writes = None
            writes.put(None)
            stop.set()
            await asyncio.to_thread(_join, (writer, reader), 1.0)
            with contextlib.suppress(OSError, self._serial_lib.SerialException):
                device.close()

    def _read(self, device: Any, lines: asyncio.Queue[object], stop: threading.Event) -> None:
        """Reader thread: bytes -> lines on the event loop's queue; _LOST when the port fails."""
        loop = self._loop
        splitter = proto.LineSplitter()
        try:
            while not stop.is_set():
                # One byte, then whatever else is waiting: read(256) would hold a short line ("BTN UP") until
                # the port's timeout (50 ms) ran out, and that wait came before every button event.
                data = device.read(1)
                if data and (waiting := device.in_waiting):
                    data += device.read(waiting)
                for line in splitter.feed(data):
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                if splitter.dropped:
                    loop.call_soon_threadsafe(self._noise, f"{splitter.dropped} over-long line(s)")
                    splitter.dropped = 0
        except (OSError, self._serial_lib.SerialException, TypeError):  # TypeError: pyserial on a vanished fd
            loop.call_soon_threadsafe(lines.put_nowait, _LOST)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._supervisor is not None
        return self._supervisor.get_loop()

    async def _greet(self, port: str, lines: asyncio.Queue[object]) -> None:
        self._write(proto.hello_query())
        deadline = time.monotonic() + self.hello_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(lines.get(), left)
            except TimeoutError:
                break
            if item is _LOST:
                raise SerialBoardError(f"{port} went away during the greeting")
            message = proto.parse_line(str(item))
            if isinstance(message, proto.Hello):
                if message.protocol != proto.PROTOCOL:
                    raise SerialBoardError(
                        f"the board on {port} speaks protocol {message.protocol}, this Plush speaks "
                        f"{proto.PROTOCOL}: flash hardware/firmware/ from this version"
                    )
                self.version = message.version
                self.connections += 1
                self._write(proto.led(self._led))
                self._ready.set()
                log.info("paw_board_connected", port=port, firmware=message.version)
                return
        raise SerialBoardError(f"{port} did not answer like a Plush paw board (no HELLO)")

    async def _relay(self, lines: asyncio.Queue[object]) -> None:
        heard = time.monotonic()
        next_ping = heard + self.ping_every_s
        pings = 0
        while True:
            wait = max(0.0, min(next_ping, heard + self.silence_limit_s) - time.monotonic())
            try:
                item = await asyncio.wait_for(lines.get(), wait)
            except TimeoutError:
                item = _QUIET
            now = time.monotonic()
            if item is _LOST:
                return
            if item is _QUIET:
                if now - heard >= self.silence_limit_s:
                    log.warning("paw_board_silent", seconds=round(now - heard, 1))
                    return
                if now >= next_ping:
                    pings += 1
                    self._write(proto.ping(str(pings)))
                    next_ping = now + self.ping_every_s
                continue
            heard = now
            self._handle(proto.parse_line(str(item)))

    def _handle(self, message: proto.BoardMessage) -> None:
        if isinstance(message, proto.Button):
            if message.down != self._pressed:
                self._pressed = message.down
                self._events.put_nowait(ButtonEvent.DOWN if message.down else ButtonEvent.UP)
        elif isinstance(message, proto.Hello):  # the board restarted: it forgot the LED state and the press
            self._write(proto.led(self._led))
            if self._pressed:
                self._pressed = False
                self._events.put_nowait(ButtonEvent.UP)
        elif isinstance(message, proto.BoardError):
            log.warning("paw_board_refused", reason=message.reason)
        elif isinstance(message, proto.Noise):
            self._noise(message.line[:40])

    def _noise(self, what: str) -> None:
        self.noise += 1
        log.debug("paw_board_noise", line=what)

    def _write(self, data: bytes) -> None:
        """Queue a line for the board; never blocks (the session's writer thread sends it)."""
        writes = self._writes
        if writes is not None:  # not connected: the state is sent on the next greeting
            writes.put(data)

    def _write_all(self, device: Any, writes: queue.SimpleQueue[bytes | None]) -> None:
        """Writer thread: sends the queued lines in order (what queued up meanwhile in one write) until None."""
        while True:
            batch = bytearray()
            item = writes.get()
            while item is not None:
                batch += item
                try:
                    item = writes.get_nowait()
                except queue.Empty:
                    break
            if batch:
                with contextlib.suppress(OSError, self._serial_lib.SerialException):
                    device.write(bytes(batch))
            if item is None:
                return


def _join(threads: tuple[threading.Thread, ...], timeout_s: float) -> None:
    for thread in threads:
        thread.join(timeout_s)
