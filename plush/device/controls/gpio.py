"""A button and a status LED wired straight to the Pi's GPIO pins, through gpiozero.

The button connects its pin to ground (the internal pull-up keeps it high), debounced by gpiozero; the LED
(through a resistor) breathes when idle, glows while listening, pulses while thinking or speaking and blinks on
errors. On a Pi 5, gpiozero needs the lgpio pin factory (`apt install python3-lgpio`, or `pip install lgpio`);
GPIOZERO_PIN_FACTORY=lgpio selects it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from plush.device.controls.base import ButtonEvent, QueuedControls
from plush.errors import PlushError

BOUNCE_S = 0.025
"""Contact bounce ignored after each edge (the paw firmware uses the same 25 ms)."""


class GpioError(PlushError):
    """The GPIO pins cannot be used."""


class GpioButton(QueuedControls):
    """A push button on `button_pin` and an optional LED on `led_pin` (BCM numbers)."""

    def __init__(self, button_pin: int, led_pin: int | None = None, *, pin_factory: Any = None) -> None:
        try:
            from gpiozero import PWMLED, Button
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise GpioError("GPIO buttons need gpiozero: pip install 'plush[device]'") from exc
        super().__init__()
        self._loop = asyncio.get_running_loop()
        try:
            self._button = Button(button_pin, pull_up=True, bounce_time=BOUNCE_S, pin_factory=pin_factory)
            self._led = PWMLED(led_pin, pin_factory=pin_factory) if led_pin is not None else None
        except Exception as exc:  # gpiozero raises BadPinFactory, PinInvalidPin ... with useful messages
            raise GpioError(
                f"cannot use GPIO{button_pin} for the button: {exc}. On a Pi 5 install lgpio and set "
                'GPIOZERO_PIN_FACTORY=lgpio; elsewhere use button = "serial" or "keyboard"'
            ) from exc
        # gpiozero calls these on its own thread: hand each edge to the event loop.
        self._button.when_pressed = lambda: self._post(ButtonEvent.DOWN)
        self._button.when_released = lambda: self._post(ButtonEvent.UP)

    def _post(self, event: ButtonEvent) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def show(self, state: str) -> None:
        led = self._led
        if led is None:
            return
        if state == "listening":
            led.value = 1.0
        elif state == "idle":
            led.pulse(fade_in_time=2.0, fade_out_time=2.0)
        elif state in ("thinking", "speaking"):
            led.pulse(fade_in_time=0.3, fade_out_time=0.3)
        elif state in ("error", "offline"):
            led.blink(on_time=0.25 if state == "error" else 1.0, off_time=0.25 if state == "error" else 1.0)
        else:
            led.off()

    async def aclose(self) -> None:
        self._button.close()
        if self._led is not None:
            self._led.close()
        self._events.put_nowait(ButtonEvent.QUIT)
