"""Google Gemini through the `google-genai` SDK: async streaming with the persona as system instruction.

Safety settings default to blocking at low probability and above in every category, because a child may be the
one talking. The SDK's own retries are off: the router decides what to do when Gemini fails (use the local
Llama), which is faster for a voice turn than waiting on a retry.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

from plush.config import GeminiConfig
from plush.server.llm.base import LlmBackend, LlmBlockedError, LlmError, LlmQuotaError, Prompt, Usage

CHILD_SAFE_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)


def http_options(base_url: str | None, timeout_s: float) -> Any:
    """google-genai's HTTP settings, always on its httpx transport.

    google-genai switches its async client to aiohttp whenever aiohttp happens to be installed (the voice
    trainer's packages pull it in). aiohttp raises other errors and times a stalled stream out differently, so
    the fallback to the local brain would behave differently on a machine with the train extra. Naming the
    httpx transport keeps one, tested, behaviour.
    """
    import httpx2
    from google.genai import types

    return types.HttpOptions(
        base_url=base_url,
        timeout=int(timeout_s * 1000),
        async_client_args={"transport": httpx2.AsyncHTTPTransport()},
    )


class GeminiBackend(LlmBackend):
    """Gemini flash (by default the `gemini-flash-latest` alias)."""

    name = "gemini"

    def __init__(self, api_key: str, config: GeminiConfig) -> None:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise LlmError("Gemini needs google-genai: pip install 'plush[server]'") from exc
        self._types = types
        self._config = config
        self._client = genai.Client(api_key=api_key, http_options=http_options(config.base_url, config.timeout_s))

    def _request_config(self, prompt: Prompt) -> object:
        t = self._types
        cfg = self._config
        thinking = None
        if cfg.thinking_level is not None:
            thinking = t.ThinkingConfig(thinking_level=t.ThinkingLevel(cfg.thinking_level.upper()))
        return t.GenerateContentConfig(
            system_instruction=prompt.system,
            temperature=cfg.temperature,
            max_output_tokens=cfg.max_output_tokens,
            thinking_config=thinking,
            safety_settings=[
                t.SafetySetting(category=t.HarmCategory(c), threshold=t.HarmBlockThreshold(cfg.safety_threshold))
                for c in CHILD_SAFE_CATEGORIES
            ],
        )

    def _contents(self, prompt: Prompt) -> list[Any]:
        t = self._types
        contents: list[Any] = [
            t.Content(role="model" if m.role == "assistant" else "user", parts=[t.Part(text=m.text)])
            for m in prompt.history
        ]
        contents.append(t.Content(role="user", parts=[t.Part(text=prompt.user_content)]))
        return contents

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        from google.genai import errors

        try:
            response = await self._client.aio.models.generate_content_stream(
                model=self._config.model,
                contents=self._contents(prompt),
                config=self._request_config(prompt),  # type: ignore[arg-type]
            )
            finished = False
            said = 0
            async for chunk in response:
                if usage is not None and chunk.usage_metadata is not None:
                    usage.prompt_tokens = chunk.usage_metadata.prompt_token_count or usage.prompt_tokens
                    usage.output_tokens = chunk.usage_metadata.candidates_token_count or usage.output_tokens
                if (feedback := chunk.prompt_feedback) is not None and feedback.block_reason is not None:
                    reason = _name(feedback.block_reason)
                    category = _blocked_category(feedback.safety_ratings) or reason
                    raise LlmBlockedError(f"Gemini blocked the prompt ({reason}, {category})", category)
                for candidate in chunk.candidates or []:
                    for part in (candidate.content.parts or []) if candidate.content else []:
                        if part.text and not part.thought:
                            said += len(part.text)
                            yield part.text
                    finished = finished or candidate.finish_reason is not None
                    if (finish := _name(candidate.finish_reason)) in _BLOCKING_FINISHES:
                        category = _blocked_category(candidate.safety_ratings) or finish
                        raise LlmBlockedError(f"Gemini blocked the reply ({finish}, {category})", category)
            if not finished:  # every real stream ends with a finishReason: without one, the reply was cut
                raise LlmError(f"Gemini's stream ended without a finish reason, after {said} characters (cut off)")
        except errors.APIError as exc:
            if exc.code == 429:
                raise LlmQuotaError(f"Gemini quota: {exc.message}", retry_delay_s(exc.details)) from exc
            raise LlmError(f"Gemini answered {exc.code}: {exc.message}") from exc
        except LlmError:
            raise
        except Exception as exc:  # httpx timeouts, dropped connections, malformed streams
            raise LlmError(f"Gemini request failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aio.aclose()


_BLOCKING_FINISHES = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})
"""Finish reasons that mean Gemini's own filters stopped the reply (the google-genai `FinishReason` names)."""


def _name(value: Any) -> str:
    """An enum's name ("SAFETY"), or the raw string the API sent when the client library does not know it yet."""
    return "" if value is None else str(getattr(value, "name", value))


def _blocked_category(ratings: Any) -> str:
    """The category Gemini blocked for: the rating marked `blocked`, else the most probable one."""
    order = ("NEGLIGIBLE", "LOW", "MEDIUM", "HIGH")
    rated = [(bool(r.blocked), order.index(p) if (p := _name(r.probability)) in order else -1, _name(r.category))
             for r in ratings or []]  # fmt: skip
    return max(rated)[2] if rated else ""


def retry_delay_s(details: Any) -> float | None:
    """The `retryDelay` of a google.rpc.RetryInfo in an error body ("53s", "1.5s"), in seconds."""
    try:
        items = details["error"]["details"]
    except (KeyError, TypeError):
        return None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
