"""Structured logging: one event per line, `key=value` fields (turn id, device id, timings).

Library code gets a logger with `get_logger(__name__)` and logs events such as
`log.info("turn_done", turn_id=..., backend=...)`; the CLI calls `setup_logging()` once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def setup_logging(level: str = "INFO") -> None:
    """Route structlog and the standard library (grpc, httpx ...) to stderr as key=value lines."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(numeric)
    for noisy in ("httpx", "httpcore", "faster_whisper", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"], sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )


def command_level(level: str) -> str:
    """The log level for a command that shows its own progress to a person (`plush voice ...`): its INFO events
    would only repeat that progress as key=value lines, so they show at DEBUG only."""
    return level if level.upper() == "DEBUG" else max(level.upper(), "WARNING", key=_rank)


def _rank(level: str) -> int:
    return logging.getLevelNamesMapping().get(level, logging.INFO)


class _StderrLogger:
    """Prints each line to `sys.stderr` as it is when the line is logged, not as it was at setup: a command run in
    a test (CliRunner) swaps stderr and closes its copy, and later events must not go to that closed stream."""

    def __init__(self, *_: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def get_logger(name: str) -> Any:
    """A structured logger bound to the module name.

    The logger stays lazy: modules create theirs at import time, before `setup_logging` runs, and each event
    must still follow the configuration in force when it is logged (level, renderer).
    """
    return structlog.get_logger(module=name)
