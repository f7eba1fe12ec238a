"""The local brain's own process: one `LlamaEngine`, driven over its stdin and stdout by `LlamaProcess`.

llama.cpp is native code whose kernels change with the CPU (AVX-512, AMX, ARM dot products); one bad kernel is a
SIGSEGV, and a model too big for the machine is an OOM kill. Alone in this process, either ends this process
and the turn it was answering, never the server.

The protocol is one JSON object a line, each way:
- in: first `{"op": "load", "model": PATH, "config": {...}, "system": PERSONA}`; then `{"op": "generate", "id": N,
  "prompt": {...}}` and `{"op": "cancel", "id": N}`. End of input ends the process (the server is gone).
- out: `{"op": "ready", "mode": "chat"|"completion"}` or `{"op": "failed", "error": ...}` after the load; per
  generation `{"id": N, "started": true}`, then `{"id": N, "delta": TEXT, "tokens": K}` each, then
  `{"id": N, "end": true, "tokens": TOTAL}` or `{"id": N, "error": ...}`.

Generations run one at a time, in order; a cancel stops the running one within a token, and a queued one never
starts. The protocol owns the real stdout: anything a native library prints there goes to stderr instead.
faulthandler is on, so a crash writes this process's Python stack to stderr (the server's log) as it dies.

`PLUSH_LLM_WORKER_CRASH="MARKER=SIGNAL"` is for tests: a prompt whose message holds MARKER makes the worker
kill itself with SIGNAL right after its first delta, as a native crash in the middle of a reply would;
MARKER `@warm_up` kills it at every start, before the persona is evaluated (as AMX did).
"""

from __future__ import annotations

import faulthandler
import json
import os
import queue
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

CRASH_ENV = "PLUSH_LLM_WORKER_CRASH"
WARM_UP_MARKER = "@warm_up"


def prompt_to_json(prompt: Any) -> dict[str, Any]:
    """A `Prompt` as plain data for the pipe."""
    return asdict(prompt)


def prompt_from_json(data: dict[str, Any]) -> Any:
    from plush.server.llm.base import Message, Prompt

    history = tuple(Message(m["role"], m["text"]) for m in data.get("history", ()))
    return Prompt(**{**data, "history": history})


class _Out:
    """The protocol's side of stdout: one JSON line per message, written whole and flushed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def send(self, **message: Any) -> None:
        self._stream.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        self._stream.flush()


class _Commands:
    """Reads stdin in a thread of its own, so a cancel reaches a generation while it runs."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._current: int | None = None
        self._cancelled: set[int] = set()

    def read_forever(self) -> None:
        for line in self._stream:
            command = json.loads(line)
            if command.get("op") == "cancel":
                with self._lock:
                    self._cancelled.add(command["id"])
                    if command["id"] == self._current:
                        self.stop.set()
            else:
                self.queue.put(command)
        self.queue.put(None)  # the server closed the pipe (or died): nothing more to do

    def begin(self, turn: int) -> bool:
        """Mark `turn` as running; False when it was cancelled while queued."""
        with self._lock:
            if turn in self._cancelled:
                self._cancelled.discard(turn)
                return False
            self._current = turn
            self.stop.clear()
            return True

    def end(self) -> None:
        with self._lock:
            if self._current is not None:
                self._cancelled.discard(self._current)
            self._current = None


def _crash_marker() -> tuple[str, signal.Signals] | None:
    marker, _, name = os.environ.get(CRASH_ENV, "").partition("=")
    return (marker, signal.Signals[name or "SIGSEGV"]) if marker else None


def _generate(engine: Any, command: dict[str, Any], out: _Out, commands: _Commands) -> None:
    turn = command["id"]
    prompt = prompt_from_json(command["prompt"])
    crash = _crash_marker()
    said: list[str] = []
    out.send(id=turn, started=True)
    try:
        for delta in engine.deltas(prompt):
            if commands.stop.is_set():
                break
            said.append(delta)
            out.send(id=turn, delta=delta, tokens=engine.count_tokens(delta))
            if crash is not None and crash[0] in prompt.user:
                os.kill(os.getpid(), crash[1])
    except Exception as exc:  # a Python-level failure: this turn's error, and the worker lives on
        out.send(id=turn, error=f"local LLM failed: {exc}")
        return
    out.send(id=turn, end=True, tokens=engine.count_tokens("".join(said)))


def main() -> None:
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the real stdout is the protocol's: stray prints from native code go to stderr
    sys.stdout = sys.stderr
    faulthandler.enable()
    # Ctrl+C in the terminal reaches the whole process group: the server stops its turns and then this worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = _Out(protocol)
    commands = _Commands(sys.stdin.buffer)
    load = json.loads(sys.stdin.buffer.readline() or b"{}")
    if load.get("op") != "load":
        out.send(op="failed", error="the worker expected a load command first")
        return
    from plush.config import LlamaConfig
    from plush.logs import setup_logging
    from plush.server.llm.base import LlmError
    from plush.server.llm.llama import LlamaEngine

    setup_logging(os.environ.get("PLUSH_LOG_LEVEL", "WARNING"))
    try:
        engine = LlamaEngine(Path(load["model"]), LlamaConfig.model_validate(load["config"]))
        if (crash := _crash_marker()) is not None and crash[0] == WARM_UP_MARKER:
            os.kill(os.getpid(), crash[1])
        if load.get("system"):
            engine.warm_up(load["system"])
    except LlmError as exc:
        out.send(op="failed", error=str(exc))
        return
    except Exception as exc:  # the persona's evaluation failed in Python (a crash would not get here)
        out.send(op="failed", error=f"the local model could not read the persona: {exc}")
        return
    out.send(op="ready", mode=engine.prompt_mode)
    threading.Thread(target=commands.read_forever, name="plush-llama-commands", daemon=True).start()
    while (command := commands.queue.get()) is not None:
        if command.get("op") != "generate":
            continue
        if not commands.begin(command["id"]):
            out.send(id=command["id"], end=True, tokens=0)
            continue
        try:
            _generate(engine, command, out, commands)
        finally:
            commands.end()


if __name__ == "__main__":
    main()
