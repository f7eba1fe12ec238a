"""The paw board's serial protocol, host side: what the board's lines mean and what to send it.

The protocol is defined by the firmware (hardware/firmware/src/paw.h): ASCII lines, at most 64 bytes, '\\n' at the
end. Lines the host does not recognise are returned as `Noise` so the caller can log and ignore them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE_MAX = 64
PROTOCOL = 1
BAUD_RATE = 115200


@dataclass(frozen=True)
class Hello:
    version: str
    protocol: int


@dataclass(frozen=True)
class Button:
    down: bool


@dataclass(frozen=True)
class Pong:
    token: str


@dataclass(frozen=True)
class Ack:
    state: str


@dataclass(frozen=True)
class BoardError:
    reason: str


@dataclass(frozen=True)
class Noise:
    line: str


BoardMessage = Hello | Button | Pong | Ack | BoardError | Noise

_HELLO = re.compile(r"HELLO plush-paw (\S+) proto=(\d+)")


def parse_line(line: str) -> BoardMessage:
    """One line from the board (without its newline)."""
    if match := _HELLO.fullmatch(line):
        return Hello(match.group(1), int(match.group(2)))
    if line in ("BTN DOWN", "BTN UP"):
        return Button(down=line == "BTN DOWN")
    if line.startswith("PONG ") and len(line) > 5:
        return Pong(line[5:])
    if line.startswith("OK LED "):
        return Ack(line[7:])
    if line.startswith("ERR "):
        return BoardError(line[4:])
    return Noise(line)


class LineSplitter:
    """Bytes from the serial port -> whole lines; over-long lines and non-ASCII bytes are dropped, as the board
    itself does, and counted so the caller can log them."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        for byte in data:
            if byte == 0x0A:
                if self._overflow:
                    self.dropped += 1
                else:
                    lines.append(self._buffer.decode("ascii"))
                self._buffer.clear()
                self._overflow = False
            elif 0x20 <= byte < 0x7F and not self._overflow:
                if len(self._buffer) >= LINE_MAX:
                    self._overflow = True
                else:
                    self._buffer.append(byte)
        return lines


def hello_query() -> bytes:
    return b"HELLO?\n"


def ping(token: str) -> bytes:
    return f"PING {token}\n".encode("ascii")


def led(state: str) -> bytes:
    return f"LED {state}\n".encode("ascii")
