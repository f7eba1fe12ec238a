"""The plush's button and status lights: serial paw board, GPIO, or keyboard (see `base`)."""

from plush.device.controls.base import LED_STATES, ButtonEvent, Controls
from plush.device.controls.keyboard import HoldOrTap, KeyboardButton

__all__ = ["LED_STATES", "ButtonEvent", "Controls", "HoldOrTap", "KeyboardButton"]
