"""The one interface every LLM backend implements: a prompt in, text deltas streamed out."""

from __future__ import annotations

import math
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


class LlmBlockedError(LlmError):
    """The provider's own safety filter refused the prompt or the reply. `category` is the one it gave
    (`HARM_CATEGORY_...`, or its block reason when it named none). No other brain is asked: the turn is blocked."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


class LlmBusyError(LlmError):
    """The local model's queue is full; the turn is refused at once rather than waiting."""


class LlmCrashedError(LlmError):
    """The local model's worker process died under the turn (a signal, out of memory, an abort in C++), or is
    down after dying again and again. `reason` goes into the turn log's backend_reason; the turn is an error."""

    def __init__(self, message: str, reason: str = "local_llm_crashed") -> None:
        super().__init__(message)
        self.reason = reason


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


def approx_tokens(text: str) -> int:
    """A cautious token count without a tokenizer: about 3 UTF-8 bytes a token.

    English runs near 4 bytes a token and Korean near 3 (a Hangul syllable is 3 bytes and often one token), so
    this overestimates English a little, which is the safe side for budgets.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)


@dataclass(frozen=True)
class Prompt:
    """What an LLM is asked: the (cache-stable) system prompt, recent history, and the new user message.

    `memory` (long-term facts and recalled older turns) rides with the new message rather than in the system
    prompt, so the system prompt and the history before it stay byte-identical and the prompt caches reuse them.
    """

    system: str
    history: tuple[Message, ...]
    user: str
    memory: str = ""
    speaker: str = "Assistant"
    """The companion's name (the persona's), for backends that write the conversation as a plain transcript
    (`Owner: ...` / `Momo: ...` lines, as the persona's examples are) rather than as chat roles."""

    @property
    def user_content(self) -> str:
        """The last user message as the model sees it: the memory note, then what the owner said."""
        return f"{self.memory}\n\n{self.user}" if self.memory else self.user

    def as_chat_messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages, as llama.cpp's chat templates take them."""
        messages = [{"role": "system", "content": self.system}]
        messages.extend({"role": m.role, "content": m.text} for m in self.history)
        messages.append({"role": "user", "content": self.user_content})
        return messages

    def approx_tokens(self) -> int:
        """Estimated prompt size in tokens (see `approx_tokens`)."""
        texts = (self.system, self.user_content, *(m.text for m in self.history))
        return sum(approx_tokens(text) for text in texts)


class LlmBackend(ABC):
    """A text generator that streams its answer."""

    name: str

    @abstractmethod
    def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        """Yield the reply as text deltas, filling `usage` when given; raise LlmError on failure."""

    def health_note(self) -> str:
        """What a person should know about this backend's health now ('' when nothing): for the doctor, the
        dashboard and /status."""
        return ""

    def down_reason(self) -> str:
        """Why this backend cannot take a turn now ('' when it can): a turn would get the fallback line."""
        return ""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to close
        """Release connections or models."""
