"""The plush's controls: one interface for the button and the status lights, whatever drives them.

Backends: the paw's microcontroller over USB serial (`serial_paw`), the Pi's own GPIO pins (`gpio`), and the
keyboard's space bar (`keyboard`, for laptops). The turn loop reads `events()` and calls `show(state)` on every
state change; a backend without lights ignores `show`.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator


class ButtonEvent(enum.Enum):
    DOWN = "down"
    UP = "up"
    QUIT = "quit"


LED_STATES = ("off", "idle", "listening", "thinking", "speaking", "offline", "error")
"""The states the lights can show (the same names as the paw firmware's)."""


class Controls(ABC):
    """A button and (maybe) status lights."""

    @abstractmethod
    def events(self) -> AsyncIterator[ButtonEvent]:
        """Button presses and releases, until the controls are closed (then QUIT)."""

    def show(self, state: str) -> None:  # noqa: B027 - lights are optional
        """Show a plush state (one of LED_STATES) on the lights."""

    async def aclose(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release the port or pins."""


class QueuedControls(Controls):
    """Controls whose events come from another thread or task through a queue (serial, GPIO)."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[ButtonEvent] = asyncio.Queue()

    async def events(self) -> AsyncIterator[ButtonEvent]:
        while True:
            event = await self._events.get()
            yield event
            if event is ButtonEvent.QUIT:
                return
