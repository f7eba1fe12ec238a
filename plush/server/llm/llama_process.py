"""The local brain in a worker process of its own, supervised: a crash in llama.cpp costs one turn, not the server.

`LlamaProcess` is the `LlmBackend` the server uses. It starts `python -m plush.server.llm.llama_worker`, which
loads the GGUF and evaluates the persona once (the KV-cache prefix every turn reuses), then streams each reply
back a delta a line (protocol in llama_worker.py). What made the in-process model fast stays: one generation at a
time with at most `max_queue` turns waiting (one more is refused at once as busy), a cancelled turn stops the
worker within a token, and a turn cancelled while queued is never evaluated.

When the worker dies (SIGSEGV in a kernel, an OOM kill, an abort), the turn it was answering gets
`LlmCrashedError` (reason `local_llm_crashed`, detail `signal=SIGSEGV`): the router says the persona's fallback
line and the turn is stored as an error. Turns that were only queued behind it go to the restarted worker. The
worker restarts at once, then with backoff for crashes in a row (`restart_backoff_s`, doubling); after
`crashes_before_pause` crashes with no answer between them a breaker opens (`pause_s`, doubling up to ten
minutes), said once in the log, and turns get the fallback line at once with reason `local_llm_down` until a
trial restart answers again. `health_note` tells people (the doctor, the dashboard, /status) what is wrong.

A worker that stops answering without dying (a generation that gives no token for `stall_s`, prompt evaluation
included) is killed and handled as a crash, with reason `local_llm_stalled`: the turn gets the fallback line, the
turns queued behind it go to the restarted worker, and no turn holds the model's queue for a minute.

llama-cpp-python's wheels run llama.cpp's threads under OpenMP (`OPENMP = 1` in its system info), and ggml's
barrier between a graph's operations, hundreds a token, is then OpenMP's, whose waiting threads by default spin
on their core rather than sleep. On a machine whose cores are also busy elsewhere (the server's own speech
synthesis and recognition on a small box) the spinning threads take the cores from the threads doing the work:
three turns at once on the real Qwen2.5 0.5B (each with its own history), two cores, two busy processes beside
it: the first was answered after 72 s; with `OMP_WAIT_POLICY=PASSIVE` all three in 21 s
(tests/test_local_brain_stall.py). So the worker starts with that policy, unless the environment sets one.
Its price on an idle machine, measured on the same two cores (one generation of 64 tokens, Qwen2.5 0.5B, three
runs each): ~34 tokens/s spinning against ~21 sleeping; with two busy processes beside it, 4-9 against 18-22.
A shorter spin (`GOMP_SPINCOUNT=100000`) kept the idle speed (~35) but fell to 11-16 when busy. Sleeping is the
safe choice: 21 tokens/s is still five times the pace of speech, and a server's cores are seldom idle during a
turn (Piper speaks the reply while the model writes it).

The boundary costs one pipe write and one read per delta: microseconds against a token's tens of milliseconds
(bench/brain_overhead.py measures it against the in-process model).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from plush.config import LlamaConfig
from plush.logs import get_logger
from plush.server.llm.base import LlmBackend, LlmBusyError, LlmCrashedError, LlmError, Prompt, Usage
from plush.server.llm.circuit_breaker import CircuitBreaker, CircuitState
from plush.server.llm.llama import PromptMode
from plush.server.llm.llama_worker import prompt_to_json

log = get_logger(__name__)
WORKER_MODULE = "plush.server.llm.llama_worker"
MAX_PAUSE_S = 600.0
STOP_WAIT_S = 3.0
LINE_LIMIT = 1 << 20
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
"""OpenMP's waiting threads sleep instead of spinning on cores others need (see the module docstring)."""
State = Literal["starting", "ready", "restarting", "down", "stopped"]


def exit_reason(returncode: int) -> str:
    """How a worker ended, for people and the turn log: `signal=SIGSEGV`, or `exit=1`."""
    if returncode < 0:
        try:
            return f"signal={signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal={-returncode}"
    return f"exit={returncode}"


@dataclass
class _Worker:
    """One running worker process: its pipes and the open generations' queues by id."""

    process: asyncio.subprocess.Process
    mode: PromptMode
    streams: dict[int, asyncio.Queue[tuple[Any, ...]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    stalled: str = ""
    """Why the watchdog killed this worker (`local_llm_stalled no token for 30 s`), '' unless it did."""

    def send(self, **message: Any) -> None:
        """Queue one command for the worker (a few hundred bytes: the pipe takes it without waiting)."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            with suppress(BrokenPipeError, ConnectionResetError):  # dying: the reader tells the turns
                stdin.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    def stall(self, reason: str) -> None:
        """Kill a worker that stopped giving tokens; its reader then ends the turns as for any other crash."""
        if not self.stalled:
            self.stalled = reason
            with suppress(ProcessLookupError):
                self.process.kill()


class LlamaProcess(LlmBackend):
    """The local GGUF model in a supervised worker process (see the module docstring)."""

    name = "llama"

    def __init__(self, model_path: Path, config: LlamaConfig, *, python: str = sys.executable) -> None:
        self.model_path = model_path
        self._config = config
        self._python = python
        self._system = ""
        self._worker: _Worker | None = None
        self._state: State = "starting"
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._in_a_row = 0
        self.crashes = 0
        self.last_crash = ""
        """The last crash's reason and detail (`local_llm_crashed signal=SIGSEGV`), '' before any."""
        self._retry_at = 0.0
        self._restart: asyncio.Task[None] | None = None
        self._breaker = CircuitBreaker(
            failure_threshold=config.crashes_before_pause,
            base_backoff_s=config.pause_s,
            max_backoff_s=MAX_PAUSE_S,
            jitter=0.0,
        )

    # -- what people see ----------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while none runs): `kill -SEGV <pid>` shows what a crash costs."""
        return self._worker.process.pid if self._worker is not None else None

    @property
    def prompt_mode(self) -> PromptMode | None:
        return self._worker.mode if self._worker is not None else None

    def health_note(self) -> str:
        if self._state == "down":
            wait = max(0.0, self._retry_at - time.monotonic())
            return (
                f"local brain down: {self.last_crash} ({self._in_a_row} crashes in a row); "
                f"next try in {wait:.0f} s, the fallback line answers until then"
            )
        if self._state == "restarting":
            return f"local brain restarting after {self.last_crash}"
        if self._state == "starting":
            return "local brain starting"
        if self.crashes:
            return f"local brain crashed {self.crashes} time(s) since start, last: {self.last_crash}; running again"
        return ""

    def down_reason(self) -> str:
        return "local_llm_down" if self._state in ("down", "stopped") else ""

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self, system_prompt: str) -> None:
        """Start the worker: load the model and evaluate the persona (`system_prompt`).

        A model that cannot be loaded raises LlmError (the server cannot use it, say so at start). A worker that
        dies while loading is a crash like any other: it is restarted behind the breaker, and the server starts.
        """
        self._system = system_prompt
        try:
            await self._spawn()
        except LlmCrashedError as exc:
            self._crashed(str(exc))

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            env={WAIT_POLICY[0]: WAIT_POLICY[1], **os.environ},
        )
        assert process.stdin is not None and process.stdout is not None
        load = {"op": "load", "model": str(self.model_path), "config": self._config.model_dump(mode="json")}
        process.stdin.write(json.dumps({**load, "system": self._system}).encode() + b"\n")
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self._config.start_timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise LlmCrashedError(
                f"local_llm_crashed start_timeout={self._config.start_timeout_s:g}s (loading {self.model_path.name})"
            ) from None
        if not line:
            code = await process.wait()
            raise LlmCrashedError(f"local_llm_crashed {exit_reason(code)} (while loading {self.model_path.name})")
        message = json.loads(line)
        if message.get("op") != "ready":
            process.kill()
            await process.wait()
            raise LlmError(message.get("error") or f"the local model's worker said {message}")
        worker = _Worker(process, message["mode"])
        worker.reader = asyncio.create_task(self._read(worker), name="plush-llama-reader")
        self._worker = worker
        self._set_state("ready")
        log.info("local_llm_ready", pid=process.pid, model=self.model_path.name, mode=worker.mode)

    async def _read(self, worker: _Worker) -> None:
        """Hand each line to its generation's queue; at end of output, the worker has died.

        While a generation runs (from its "started" to its end, a cancelled turn's included), each line must come
        within `stall_s` or the worker is killed as stalled: a turn queued behind a stuck one waits no longer.
        """
        stdout = worker.process.stdout
        assert stdout is not None
        running = False
        while True:
            try:
                line = await (
                    asyncio.wait_for(stdout.readline(), self._config.stall_s) if running else stdout.readline()
                )
            except TimeoutError:  # the kill ends the output, and the turns hear of it below
                worker.stall(f"local_llm_stalled no token for {self._config.stall_s:g} s")
                continue
            if not line:
                break
            message = json.loads(line)
            running = "started" in message or (running and not ("end" in message or "error" in message))
            stream = worker.streams.get(message.get("id", 0))
            if stream is None:
                continue  # a cancelled turn's last words
            if "delta" in message:
                stream.put_nowait(("delta", message["delta"], message.get("tokens", 0)))
            elif "started" in message:
                stream.put_nowait(("started",))
            elif "end" in message:
                stream.put_nowait(("end", message.get("tokens", 0)))
            elif "error" in message:
                stream.put_nowait(("error", message["error"]))
        code = await worker.process.wait()
        if self._worker is worker:
            self._worker = None
        if self._state == "stopped":
            for stream in worker.streams.values():  # a turn still waiting as the server stops
                stream.put_nowait(("error", "the local brain stopped: the server is stopping"))
            return
        reason = worker.stalled or f"local_llm_crashed {exit_reason(code)}"
        for stream in worker.streams.values():
            stream.put_nowait(("crash", reason, reason.split()[0]))
        log.error(
            reason.split()[0],
            pid=worker.process.pid,
            exit=exit_reason(code),
            turns_in_flight=len(worker.streams),
            hint=(
                f"no token for stall_s={self._config.stall_s:g} s: the worker was killed and restarts"
                if worker.stalled
                else "the worker's last words, if any, are just above (faulthandler)"
            ),
        )
        self._crashed(reason)

    def _crashed(self, reason: str) -> None:
        """Count a crash and plan the restart: at once, then with backoff, or after the breaker's pause."""
        self.crashes += 1
        self._in_a_row += 1
        self.last_crash = reason
        self._breaker.failure()
        if self._breaker.state is CircuitState.OPEN:
            delay = self._breaker.seconds_left()
            self._set_state("down")
            log.error(
                "local_llm_breaker_open",
                reason=reason,
                crashes_in_a_row=self._in_a_row,
                pause_s=round(delay, 1),
                hint="turns get the persona's fallback line until the local brain answers again",
            )
        else:
            delay = 0.0 if self._in_a_row == 1 else self._config.restart_backoff_s * 2 ** (self._in_a_row - 2)
            self._set_state("restarting")
        self._retry_at = time.monotonic() + delay
        self._restart = asyncio.create_task(self._restart_after(delay), name="plush-llama-restart")

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._state == "stopped":
            return
        self._breaker.allow()  # after the pause: this start is the breaker's trial
        try:
            await self._spawn()
        except LlmCrashedError as exc:
            self._crashed(str(exc))
        except (LlmError, OSError) as exc:  # the model file went away, or Python itself cannot start
            self._crashed(f"local_llm_crashed start_failed ({exc})")

    def _set_state(self, state: State) -> None:
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def _ready_worker(self) -> _Worker:
        """The running worker; while one restarts, wait for it; while the breaker is open, refuse."""
        while self._worker is None:
            if self._state in ("down", "stopped"):
                raise LlmCrashedError(
                    f"the local brain is down after {self.last_crash or 'stopping'}", reason="local_llm_down"
                )
            await self._changed.wait()
        return self._worker

    # -- turns --------------------------------------------------------------------------------------------------

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        if self._in_flight > self._config.max_queue:
            raise LlmBusyError(f"the local model is busy ({self._in_flight} turns ahead); try again in a moment")
        self._in_flight += 1
        counted = usage or Usage()
        try:
            for attempt in (1, 2):
                started = False
                async with aclosing(self._generation(prompt)) as items:
                    async for item in items:
                        kind = item[0]
                        if kind == "started":
                            started = True
                        elif kind == "delta":
                            counted.output_tokens += item[2]
                            yield item[1]
                        elif kind == "end":
                            counted.output_tokens = item[1]
                            self._answered()
                            return
                        elif kind == "error":
                            raise LlmError(item[1])
                        elif started or attempt == 2:  # "crash": this turn was being answered
                            raise LlmCrashedError(item[1], reason=item[2])
                # "crash" while only queued behind the turn that crashed: the restarted worker answers it
        finally:
            self._in_flight -= 1

    async def _generation(self, prompt: Prompt) -> AsyncGenerator[tuple[Any, ...]]:
        """One generation's messages from the worker; leaving early (a cancelled turn) cancels it there."""
        worker = await self._ready_worker()
        turn = next(self._ids)
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        worker.streams[turn] = queue
        finished = False
        try:
            worker.send(op="generate", id=turn, prompt=prompt_to_json(prompt))
            while True:
                item = await queue.get()
                finished = item[0] in ("end", "error", "crash")
                yield item
                if finished:
                    return
        finally:
            worker.streams.pop(turn, None)
            if not finished:
                worker.send(op="cancel", id=turn)

    def _answered(self) -> None:
        """A reply came to its end: the crashes so far are no longer 'in a row'."""
        self._in_a_row = 0
        self._breaker.success()

    async def aclose(self) -> None:
        """Stop the worker: close its input (it ends after the generation running), kill it if it lingers."""
        self._set_state("stopped")
        if self._restart is not None:
            self._restart.cancel()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.process.stdin is not None:
            worker.process.stdin.close()
        try:
            await asyncio.wait_for(worker.process.wait(), STOP_WAIT_S)
        except TimeoutError:
            worker.process.kill()
            await worker.process.wait()
        if worker.reader is not None:
            await asyncio.gather(worker.reader, return_exceptions=True)
