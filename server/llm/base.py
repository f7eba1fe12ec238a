"""The one interface every LLM backend implements: a prompt in, text deltas streamed out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

from plush.errors import PlushError


class LlmError(PlushError):
    """A backend failed; `before_first_token` tells the router whether another backend may still answer."""


class LlmUnavailableError(LlmError):
    """No backend is configured or loadable."""


class LlmQuotaError(LlmError):
    """The provider refused for quota (HTTP 429); `retry_after_s` is its RetryInfo delay when it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LlmBusyError(LlmError):
    """The local model's queue is full; the turn is refused at once rather than waiting."""


@dataclass
class Usage:
    """Tokens a turn cost, as the backend reported (or counted) them."""

    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Message:
    """One earlier utterance in the conversation."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class Prompt:
    """What an LLM is asked: the (cache-stable) system prompt, recent history, and the new user message."""

    system: str
    history: tuple[Message, ...]
    user: str

    def as_chat_messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages, as llama.cpp's chat templates take them."""
        messages = [{"role": "system", "content": self.system}]
        messages.extend({"role": m.role, "content": m.text} for m in self.history)
        messages.append({"role": "user", "content": self.user})
        return messages


class LlmBackend(ABC):
    """A text generator that streams its answer."""

    name: str

    @abstractmethod
    def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        """Yield the reply as text deltas, filling `usage` when given; raise LlmError on failure."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to close
        """Release connections or models."""
