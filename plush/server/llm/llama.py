"""A local GGUF chat model through llama-cpp-python: the answer when Gemini cannot give one.

`LlamaEngine` is the model itself, blocking. The server runs it in a worker process of its own (llama_worker.py,
supervised by llama_process.py), so that a crash inside llama.cpp costs one turn and never the server;
`LlamaBackend` runs it in this process, for tests of the engine and as the benchmark's baseline.

llama.cpp is blocking and not thread-safe, so generation runs in a worker thread under a lock (one generation at
a time per loaded model) and tokens cross back to the event loop through a queue. At most `max_queue` turns wait
behind the one generating; more are refused at once with a "busy" error. A cancelled turn sets a stop flag that
the worker checks between tokens, so the model is free again within one token. llama-cpp-python keeps the KV
cache of the previous prompt and reuses its longest common prefix, so the persona's system prompt (identical
every turn, and evaluated once at warm-up) is not recomputed.

Native kernels differ per CPU: see `extra_buffers_wanted` for the one known to crash (AMX).

A GGUF without a chat template in its metadata (a *base* model, such as base Gemma 3 270M) would make
llama-cpp-python fall back silently to Llama-2's `[INST]` format, which such a model never saw, and it answers
with `[/INST]` garbage. So the prompt mode is chosen once, at load: "chat" (the model's own template, through
`create_chat_completion`) or "completion" (the conversation written as the plain-text transcript the persona's
few-shot examples already use, `Owner: ...` / `Momo: ...` lines, ending with `Momo:` for the model to continue
and cut at the owner's next line; see `transcript`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from plush.config import LlamaConfig
from plush.logs import get_logger
from plush.server.llm.base import LlmBackend, LlmBusyError, LlmError, Prompt, Usage

log = get_logger(__name__)

_END = object()

PromptMode = Literal["chat", "completion"]
OWNER = "Owner"
"""The owner's label in a transcript: the one the persona's few-shot examples use."""


def transcript_preface(system: str) -> str:
    """What every completion-mode prompt starts with: the persona's system prompt, then a blank line.

    It depends on the persona alone, so it is byte-identical turn to turn and is the KV-cache prefix that
    `warm_up` evaluates; the blank line parts the persona's examples from the conversation itself.
    """
    return f"{system}\n\n" if system else ""


def _one_line(text: str) -> str:
    """An utterance on one line: a newline inside it would read as the start of someone else's line."""
    return " ".join(text.split())


def transcript(prompt: Prompt) -> str:
    """The completion-mode prompt: the preface, the conversation as `Owner:` / `<speaker>:` lines, `<speaker>:`.

    The memory note (facts, recalled turns) goes just before the owner's new line, as the bracketed lines
    `Recollection.note` writes ("[Memory, for you only; do not read it out]" ... "[The owner now says]"), one
    line each: a base model reads bracketed lines in a transcript as stage notes rather than someone's words.
    Placed after the history, the note leaves the history a cacheable prefix, as in chat mode.
    """
    lines = [f"{OWNER if m.role == 'user' else prompt.speaker}: {_one_line(m.text)}" for m in prompt.history]
    lines += [_one_line(line) for line in prompt.memory.splitlines() if line.strip()]
    lines += [f"{OWNER}: {_one_line(prompt.user)}", f"{prompt.speaker}:"]
    return transcript_preface(prompt.system) + "\n".join(lines)


def chat_stops(speaker: str) -> list[str]:
    """Where a chat-mode reply ends besides the template's own end: a small model that starts writing the
    transcript on (the owner's next line, or its own name again) has finished its answer."""
    return [f"\n{OWNER}:", f"\n{speaker}:"]


def transcript_stops(speaker: str) -> list[str]:
    """Where a completion-mode reply ends: the owner's next line, a blank line, or the speaker's next line.

    A base model would otherwise write the whole rest of the conversation. The model's end-of-generation
    token ends the reply too (llama.cpp stops there by itself).
    """
    return [f"\n{OWNER}:", f"\n{OWNER}", "\n\n", f"\n{speaker}:"]


def _trimmed(deltas: Iterable[str]) -> Iterator[str]:
    """The deltas without the reply's leading and trailing whitespace (the space after `Momo:`, a last newline).

    Trailing whitespace is held back until text follows it, so whitespace inside the reply still streams; a
    reply of only whitespace yields nothing (an empty reply, for the caller to handle as any other).
    """
    started = False
    pending = ""
    for delta in deltas:
        text = pending + (delta if started else delta.lstrip())
        if not text:
            continue
        started = True
        body = text.rstrip()
        pending = text[len(body) :]
        if body:
            yield body


def _chat_template(metadata: dict[str, str]) -> str:
    """The GGUF's default chat template ('' when it has none)."""
    return metadata.get("tokenizer.chat_template", "").strip()


def extra_buffers_wanted(setting: str, system_info: str) -> bool:
    """Whether to load with llama.cpp's extra buffer types (weight repacking, AMX tiles).

    "auto" turns them off where this llama.cpp build runs AMX kernels (`AMX_INT8 = 1` in its system info): on
    Intel CPUs with AMX, llama-cpp-python 0.3.36 built natively crashes in `ggml_backend_amx_mul_mat` on every
    prompt longer than one token (ggml-org/llama.cpp#20824, closed without a fix). Everywhere else the repacked
    weights stay on, since they are what makes Q4 fast on AVX2/AVX-512 and ARM.
    """
    if setting == "auto":
        return "AMX_INT8 = 1" not in system_info
    return setting == "on"


def _load_llama(model_path: Path, config: LlamaConfig) -> Any:
    """`Llama(...)` with `use_extra_bufts` chosen by `extra_buffers_wanted`.

    `Llama` takes no such argument, but builds its model parameters from `llama_model_default_params()` during
    its constructor, so that function is wrapped for the constructor's duration (one load at a time).
    """
    import llama_cpp
    import llama_cpp.llama_cpp as low

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    wanted = extra_buffers_wanted(config.extra_buffers, info)
    defaults = low.llama_model_default_params

    def params() -> Any:
        made = defaults()
        made.use_extra_bufts = wanted
        return made

    with _LOAD_LOCK:
        low.llama_model_default_params = params
        try:
            llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=config.n_ctx,
                n_threads=config.n_threads or os.cpu_count(),
                n_gpu_layers=config.n_gpu_layers,
                seed=config.seed,
                verbose=False,
            )
        finally:
            low.llama_model_default_params = defaults
    log.info("llama_cpu", extra_buffers=wanted, amx="AMX_INT8 = 1" in info, setting=config.extra_buffers)
    return llm


_LOAD_LOCK = threading.Lock()


class LlamaEngine:
    """A loaded GGUF model, blocking: its own chat template formats the prompt, or a plain transcript when it
    has none. It runs wherever its caller runs it: in `LlamaBackend`'s thread, or alone in the local brain's
    worker process (llama_worker.py)."""

    def __init__(self, model_path: Path, config: LlamaConfig) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the extras installed
            raise LlmError("the local LLM needs llama-cpp-python: pip install 'plush[llama]'") from exc
        self.config = config
        try:
            self.llm: Any = _load_llama(model_path, config)
        except Exception as exc:  # llama.cpp raises ValueError for unreadable files
            raise LlmError(f"cannot load the GGUF model {model_path}: {exc}") from exc
        has_template = bool(_chat_template(self.llm.metadata or {}))
        self.prompt_mode: PromptMode = "chat" if has_template else "completion"
        reason = "gguf chat template" if has_template else "no chat template"
        log.info("llama_loaded", model=model_path.name, mode=self.prompt_mode, reason=reason)

    def deltas(self, prompt: Prompt) -> Iterator[str]:
        """The reply's text deltas, in the model's prompt mode."""
        if self.prompt_mode == "chat":
            chunks = self.llm.create_chat_completion(
                messages=prompt.as_chat_messages(),
                stream=True,
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature,
                seed=self.config.seed,
                stop=chat_stops(prompt.speaker),
            )
            for chunk in chunks:
                if delta := chunk["choices"][0]["delta"].get("content"):
                    yield delta
            return
        chunks = self.llm.create_completion(
            prompt=transcript(prompt),
            stream=True,
            stop=transcript_stops(prompt.speaker),
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            seed=self.config.seed,
        )
        yield from _trimmed(chunk["choices"][0]["text"] for chunk in chunks)

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the persona's part of the prompt once, so the first turn reuses it from the cache."""
        if self.prompt_mode == "chat":
            self.llm.create_chat_completion(
                messages=[{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}],
                max_tokens=1,
            )
        else:
            self.llm.create_completion(prompt=transcript_preface(system_prompt), max_tokens=1)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the model's own tokenizer: the reply's real cost (a streamed delta may hold several
        tokens, or part of one). Tokenizing reads only the vocabulary, so it is safe beside a generation and
        takes microseconds."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0


class LlamaBackend(LlmBackend):
    """A `LlamaEngine` in this process, run in a thread of its own.

    The server runs the model in a worker process instead (`LlamaProcess`), so that a crash in llama.cpp costs
    one turn; this in-process form is the baseline the benchmark measures that boundary against, and what tests
    of the engine itself look into.
    """

    name = "llama"

    def __init__(self, model_path: Path, config: LlamaConfig) -> None:
        self._config = config
        self.engine = LlamaEngine(model_path, config)
        self._lock = threading.Lock()
        self._in_flight = 0
        # Its own worker thread: turns queued behind the one generating wait here, not in the shared pool that
        # speech synthesis and recognition run in (they would otherwise wait for threads parked on `_lock`).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plush-llama")

    @property
    def _llm(self) -> Any:
        """The llama-cpp-python model itself (for tests and benchmarks that look at its KV cache)."""
        return self.engine.llm

    @property
    def prompt_mode(self) -> PromptMode:
        """Either "chat" (the GGUF's own chat template) or "completion" (a plain transcript, for a base model)."""
        return self.engine.prompt_mode

    def _generate(self, prompt: Prompt, emit: Any, stop: threading.Event) -> None:
        """Worker thread: run one generation, emitting deltas until done or stopped."""
        with self._lock:
            if stop.is_set():  # the turn was cancelled while it waited: no prompt evaluation for nobody
                emit(_END)
                return
            try:
                for delta in self.engine.deltas(prompt):
                    if stop.is_set():
                        break
                    emit(delta)
            except Exception as exc:  # surfaced to the caller as LlmError
                emit(LlmError(f"local LLM failed: {exc}"))
            finally:
                emit(_END)

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the persona's part of the prompt once (blocking), so the first turn reuses it from the cache."""
        with self._lock:
            self.engine.warm_up(system_prompt)

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        if self._in_flight > self._config.max_queue:
            raise LlmBusyError(f"the local model is busy ({self._in_flight} turns ahead); try again in a moment")
        self._in_flight += 1
        said: list[str] = []
        try:
            async for delta in self._stream(prompt):
                said.append(delta)
                yield delta
        finally:
            # A stopped turn's worker ends within a token, and a queued one never starts (see `_stream`), so its
            # place is free at once: a barge-in's next turn is never refused as "busy".
            self._in_flight -= 1
            if usage is not None:
                usage.output_tokens = self.count_tokens("".join(said))

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    async def _stream(self, prompt: Prompt) -> AsyncGenerator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = loop.run_in_executor(self._executor, self._generate, prompt, emit, stop)

        def ended(_: object) -> None:
            if worker.cancelled():  # dropped before it ran (closing): nothing else will end the stream
                queue.put_nowait(_END)

        worker.add_done_callback(ended)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, LlmError):
                    raise item
                yield str(item)
        finally:
            stop.set()
            worker.cancel()  # still queued: it never starts
            if worker.done() and not worker.cancelled():
                worker.result()

    async def aclose(self) -> None:
        """Drop queued generations and let the worker thread end after the one running (it stops within a token)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
