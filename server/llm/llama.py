"""A local GGUF chat model through llama-cpp-python: the answer when Gemini cannot give one.

llama.cpp is blocking and not thread-safe, so generation runs in a worker thread under a lock (one generation at
a time per loaded model) and tokens cross back to the event loop through a queue. At most `max_queue` turns wait
behind the one generating; more are refused at once with a "busy" error. A cancelled turn sets a stop flag that
the worker checks between tokens, so the model is free again within one token. llama-cpp-python keeps the KV
cache of the previous prompt and reuses its longest common prefix, so the persona's system prompt (identical
every turn, and evaluated once at warm-up) is not recomputed.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from plush.config import LlamaConfig
from server.llm.base import LlmBackend, LlmBusyError, LlmError, Prompt, Usage

_END = object()


class LlamaBackend(LlmBackend):
    """A loaded GGUF model; its own chat template formats the prompt."""

    name = "llama"

    def __init__(self, model_path: Path, config: LlamaConfig) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise LlmError("the local LLM needs llama-cpp-python: pip install 'plush[llama]'") from exc
        self._config = config
        try:
            self._llm: Any = Llama(
                model_path=str(model_path),
                n_ctx=config.n_ctx,
                n_threads=config.n_threads or os.cpu_count(),
                n_gpu_layers=config.n_gpu_layers,
                seed=config.seed,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp raises ValueError for unreadable files
            raise LlmError(f"cannot load the GGUF model {model_path}: {exc}") from exc
        self._lock = threading.Lock()
        self._in_flight = 0

    def _generate(self, prompt: Prompt, emit: Any, stop: threading.Event) -> None:
        """Worker thread: run one generation, emitting deltas until done or stopped."""
        with self._lock:
            try:
                chunks = self._llm.create_chat_completion(
                    messages=prompt.as_chat_messages(),
                    stream=True,
                    max_tokens=self._config.max_tokens,
                    temperature=self._config.temperature,
                    seed=self._config.seed,
                )
                for chunk in chunks:
                    if stop.is_set():
                        break
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        emit(delta)
            except Exception as exc:  # surfaced to the caller as LlmError
                emit(LlmError(f"local LLM failed: {exc}"))
            finally:
                emit(_END)

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the persona's system prompt once (blocking), so the first turn reuses it from the cache."""
        with self._lock:
            self._llm.create_chat_completion(
                messages=[{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}],
                max_tokens=1,
            )

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        if self._in_flight > self._config.max_queue:
            raise LlmBusyError(f"the local model is busy ({self._in_flight} turns ahead); try again in a moment")
        self._in_flight += 1
        try:
            async for delta in self._stream(prompt):
                if usage is not None:
                    usage.output_tokens += 1
                yield delta
        finally:
            self._in_flight -= 1

    async def _stream(self, prompt: Prompt) -> AsyncGenerator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = loop.run_in_executor(None, self._generate, prompt, emit, stop)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, LlmError):
                    raise item
                yield str(item)
        finally:
            stop.set()
            if worker.done():
                worker.result()
