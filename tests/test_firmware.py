"""The paw board: its C protocol core (unit tests, a bounded fuzz run) and the serial backend talking to it.

The board is the firmware's own protocol core built as a host program (hardware/firmware/test/paw_sim.c) on a
pseudo-terminal; the plush opens the terminal's other end through pyserial, as it opens /dev/ttyACM0. A symlink
stands for the stable device path a udev rule gives the board, so "unplug" (the simulator exits) and "replug" (a
new simulator on a new terminal, the link moved) look to the plush as they would with a real cable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plush.device.controls import ButtonEvent
from plush.device.controls import paw_protocol as proto
from plush.device.controls.serial_paw import SerialBoardError, SerialPaw

FIRMWARE = Path(__file__).resolve().parents[1] / "hardware" / "firmware"


def make(*targets: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(FIRMWARE), *targets], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def simulator() -> Path:
    result = make("sim")
    assert result.returncode == 0, result.stdout + result.stderr
    return FIRMWARE / "build" / "paw_sim"


class Board:
    """A simulated paw board on a pseudo-terminal behind a symlink (its "device path")."""

    def __init__(self, simulator: Path, link: Path) -> None:
        self.simulator, self.link = simulator, link
        self.process: subprocess.Popen[str] | None = None
        self.leds: list[str] = []

    def plug_in(self) -> None:
        board_end, host_end = os.openpty()
        self.process = subprocess.Popen(
            [str(self.simulator), str(board_end)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(board_end,),
        )
        os.close(board_end)
        tty = os.ttyname(host_end)
        self._host_end = host_end  # kept open so the terminal lives as long as the board
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(tty)

    def do(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def unplug(self) -> None:
        if self.process is not None:
            self.do("quit")
            self.process.wait(timeout=5)
            assert self.process.stdout is not None
            self.leds += [line.split()[1] for line in self.process.stdout.read().splitlines()]
            self.process = None
            os.close(self._host_end)
            self.link.unlink(missing_ok=True)


@pytest.fixture
async def board(simulator: Path, tmp_path: Path) -> AsyncIterator[Board]:
    board = Board(simulator, tmp_path / "ttyPAW")
    board.plug_in()
    yield board
    board.unplug()


async def next_event(paw: SerialPaw, events: AsyncIterator[ButtonEvent]) -> ButtonEvent:
    return await asyncio.wait_for(anext(events), timeout=5)


def test_the_firmware_core_passes_its_unit_tests() -> None:
    result = make("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is installed by scripts/setup --test")
def test_a_bounded_fuzz_run_of_the_parser_finds_no_crash() -> None:
    result = make("fuzz", "FUZZ_SECONDS=15", "FUZZ_RUNS=100000", timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "no crash" in result.stdout or "Done" in result.stderr


async def test_handshake_button_events_and_leds(board: Board) -> None:
    paw = SerialPaw(str(board.link), ping_every_s=0.2)
    await paw.start(timeout_s=5)
    try:
        assert paw.connected and paw.version == "1.0.0"
        events = paw.events()
        board.do("press")
        assert await next_event(paw, events) is ButtonEvent.DOWN
        board.do("release")
        assert await next_event(paw, events) is ButtonEvent.UP
        board.do("bounce")  # contact bounce is one press, not five
        assert await next_event(paw, events) is ButtonEvent.DOWN
        board.do("release")
        assert await next_event(paw, events) is ButtonEvent.UP
        for state in ("listening", "thinking", "speaking"):
            paw.show(state)
            await asyncio.sleep(0.1)
    finally:
        await paw.aclose()
    board.unplug()
    assert board.leds[-3:] == ["listening", "thinking", "speaking"]


async def test_garbage_and_over_long_lines_are_ignored(board: Board) -> None:
    paw = SerialPaw(str(board.link), ping_every_s=0.2)
    await paw.start(timeout_s=5)
    try:
        board.do("garbage")
        board.do("long")
        board.do("press")
        events = paw.events()
        assert await next_event(paw, events) is ButtonEvent.DOWN
        assert paw.noise >= 2 and paw.connected
    finally:
        await paw.aclose()


async def test_an_unplugged_board_releases_the_button_and_is_found_again(board: Board) -> None:
    paw = SerialPaw(str(board.link), ping_every_s=0.2, max_backoff_s=0.3)
    await paw.start(timeout_s=5)
    try:
        events = paw.events()
        board.do("press")
        assert await next_event(paw, events) is ButtonEvent.DOWN
        paw.show("listening")
        board.unplug()
        assert await next_event(paw, events) is ButtonEvent.UP, "a press cut by the cable ends"
        assert not paw.connected
        board.plug_in()
        await paw.wait_connected(timeout_s=5)
        assert paw.connections == 2
        await asyncio.sleep(0.3)
        board.do("press")
        assert await next_event(paw, events) is ButtonEvent.DOWN
    finally:
        await paw.aclose()
    board.unplug()
    assert board.leds[-1] == "listening", "the replugged board was shown the current state"


async def test_a_port_that_is_not_a_paw_board_is_a_clear_error(tmp_path: Path) -> None:
    quiet_board, host_end = os.openpty()  # a terminal where nothing answers
    try:
        paw = SerialPaw(os.ttyname(host_end), hello_timeout_s=0.3)
        with pytest.raises(SerialBoardError, match="no Plush paw board answered"):
            await paw.start(timeout_s=1.0)
    finally:
        os.close(quiet_board)
        os.close(host_end)
    with pytest.raises(SerialBoardError, match="serial_port"):
        await SerialPaw(str(tmp_path / "nothing-here")).start(timeout_s=0.5)


async def test_a_board_that_stops_reading_never_holds_up_the_plush() -> None:
    """A wedged USB link: the board greets, then reads nothing more, so the port's buffer fills and every write
    waits out its 0.5 s timeout. `show()` runs on the event loop at each state change: it must never wait."""
    board_end, host_end = os.openpty()
    paw = SerialPaw(os.ttyname(host_end), hello_timeout_s=3)
    try:
        starting = asyncio.create_task(paw.start(timeout_s=5))
        assert await asyncio.to_thread(os.read, board_end, 64) == proto.hello_query()
        os.write(board_end, f"HELLO plush-paw 1.0.0 proto={proto.PROTOCOL}\n".encode())
        await starting
        slowest = 0.0
        for _ in range(20_000):  # ~250 KB of LED lines, far beyond what the terminal buffers
            started = time.perf_counter()
            paw.show("thinking")
            slowest = max(slowest, time.perf_counter() - started)
            if slowest > 0.1:
                break
        assert slowest < 0.1, f"show() waited {slowest * 1000:.0f} ms for the serial port"
    finally:
        await paw.aclose()
        os.close(board_end)
        os.close(host_end)


def test_the_host_parses_every_board_message() -> None:
    assert proto.parse_line("HELLO plush-paw 1.2.0 proto=1") == proto.Hello("1.2.0", 1)
    assert proto.parse_line("BTN DOWN") == proto.Button(down=True)
    assert proto.parse_line("PONG 7") == proto.Pong("7")
    assert proto.parse_line("OK LED idle") == proto.Ack("idle")
    assert proto.parse_line("ERR unknown command") == proto.BoardError("unknown command")
    assert proto.parse_line("BTN SIDEWAYS") == proto.Noise("BTN SIDEWAYS")
    splitter = proto.LineSplitter()
    assert splitter.feed(b"BTN D") == []
    assert splitter.feed(b"OWN\r\n\xff\x00" + b"x" * 100 + b"\nPONG 1\n") == ["BTN DOWN", "PONG 1"]
    assert splitter.dropped == 1


async def test_a_gpio_button_and_led_through_gpiozero_mock_pins() -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from plush.device.controls.gpio import GpioButton

    factory = MockFactory(pin_class=MockPWMPin)
    controls = GpioButton(17, 27, pin_factory=factory)
    events = controls.events()
    button = factory.pin(17)
    button.drive_low()  # pressed: the button pulls the pin to ground
    assert await asyncio.wait_for(anext(events), 2) is ButtonEvent.DOWN
    button.drive_high()
    assert await asyncio.wait_for(anext(events), 2) is ButtonEvent.UP
    controls.show("listening")
    assert factory.pin(27).state == 1.0
    controls.show("off")
    assert factory.pin(27).state == 0
    await controls.aclose()
    assert await asyncio.wait_for(anext(events), 2) is ButtonEvent.QUIT


async def test_a_board_plugged_in_after_the_plush_started_is_picked_up(simulator: Path, tmp_path: Path) -> None:
    board = Board(simulator, tmp_path / "ttyPAW")
    paw = SerialPaw(str(board.link), max_backoff_s=0.3)
    await paw.start(timeout_s=0.3, required=False)  # nothing plugged in yet: no error, it keeps looking
    try:
        assert not paw.connected
        board.plug_in()
        await paw.wait_connected(timeout_s=5)
        board.do("press")
        assert await asyncio.wait_for(anext(paw.events()), 5) is ButtonEvent.DOWN
    finally:
        await paw.aclose()
        board.unplug()


def test_the_pi_install_script_and_services_are_well_formed() -> None:
    pi = FIRMWARE.parent / "pi"
    assert subprocess.run(["bash", "-n", str(pi / "install.sh")], check=False).returncode == 0
    for unit in ("plush-device.service", "plush-server.service"):
        text = (pi / unit).read_text(encoding="utf-8")
        assert "ExecStart=@PLUSH@ " in text, "install.sh fills in the virtualenv's plush"
        assert "Restart=always" in text and "WantedBy=default.target" in text
    assert "plush-device.service" in (pi / "install.sh").read_text(encoding="utf-8")
