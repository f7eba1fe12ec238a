"""The keyboard's space bar as the plush's button, for laptops and development.

A terminal reports key presses (repeated while a key is held) but never releases, so the space bar works both
ways: hold it like a push-to-talk button (release is noticed when the key repeats stop), or tap it once to start
and again to stop. `HoldOrTap` holds that logic on plain timestamps so it is tested without a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from plush.device.controls.base import ButtonEvent, Controls


@dataclass
class HoldOrTap:
    """Turns space-bar presses (with auto-repeat) into DOWN/UP events.

    `repeat_wait_s`: how long after a press a repeat may still come (the keyboard's repeat delay, usually
    250-660 ms); none by then means a tap. `release_gap_s`: silence after repeats that means the key was released.
    """

    repeat_wait_s: float = 0.7
    release_gap_s: float = 0.15
    _state: str = "idle"  # idle | pressed | holding | toggled | settling
    _last: float = 0.0
    _repeating: bool = False

    def key(self, now: float) -> list[ButtonEvent]:
        """A space-bar press (or repeat) at time `now`."""
        self._last = now
        if self._state == "idle":
            self._state = "pressed"
            return [ButtonEvent.DOWN]
        if self._state == "pressed":
            self._state = "holding"
        elif self._state == "toggled":
            self._state, self._repeating = "settling", False
            return [ButtonEvent.UP]
        elif self._state == "settling":
            self._repeating = True
        return []

    def tick(self, now: float) -> list[ButtonEvent]:
        """Time passes with no key; call this often (every ~20 ms)."""
        quiet = now - self._last
        if self._state == "pressed" and quiet > self.repeat_wait_s:
            self._state = "toggled"
        elif self._state == "holding" and quiet > self.release_gap_s:
            self._state = "idle"
            return [ButtonEvent.UP]
        elif self._state == "settling" and quiet > (self.release_gap_s if self._repeating else self.repeat_wait_s):
            self._state = "idle"  # the key that stopped a toggled turn is up: the next press is a new turn
        return []


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Read keys one at a time without echo, restoring the terminal afterwards."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class KeyboardButton(Controls):
    """The space bar as the plush's button (q or Ctrl+D quits). Needs an interactive terminal; its "LEDs" are
    the status lines the terminal UI prints."""

    def __init__(self, detector: HoldOrTap | None = None, fd: int | None = None) -> None:
        self._detector = detector or HoldOrTap()
        self._fd = sys.stdin.fileno() if fd is None else fd

    async def events(self) -> AsyncIterator[ButtonEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        stop = threading.Event()

        def read_keys() -> None:
            with _cbreak(self._fd) if os.isatty(self._fd) else contextlib.nullcontext():
                while not stop.is_set():
                    ready, _, _ = select.select([self._fd], [], [], 0.02)
                    now = time.monotonic()
                    events = self._detector.tick(now)
                    if ready:
                        key = os.read(self._fd, 1)
                        if key in (b"q", b"Q", b"\x04", b""):
                            events.append(ButtonEvent.QUIT)
                        elif key == b" ":
                            events.extend(self._detector.key(now))
                    for event in events:
                        loop.call_soon_threadsafe(queue.put_nowait, event)
                    if ButtonEvent.QUIT in events:
                        return

        reader = loop.run_in_executor(None, read_keys)
        try:
            while True:
                event = await queue.get()
                yield event
                if event is ButtonEvent.QUIT:
                    return
        finally:
            stop.set()
            await reader
