"""The Telegram bridge: owners talk to the same companion (persona, memory, brain) from a Telegram chat."""

from plush.server.telegram.bridge import TelegramBridge, mask_token

__all__ = ["TelegramBridge", "mask_token"]
