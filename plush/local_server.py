"""A server's note on this computer of what it is doing, so that a plush here can say which of two silences it hears.

A server loads its models before it opens its port, so a plush that finds nothing listening cannot tell a server
still loading (wait) from one that died (nothing to wait for). The server writes a small file per port while it
runs (`announce`: its pid and "loading" or "serving") and removes it when it stops cleanly (`withdraw`). A file
whose pid is gone means the server ended without stopping: it crashed or was killed. Only a plush on the same
computer (a loopback address) reads it; both sides use this module, neither imports the other.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

State = Literal["loading", "serving"]
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def note_path(port: int) -> Path:
    """Where the server on `port` keeps its note (per user: two users' servers never share one)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"plush-server-{uid}-{port}.json"


def announce(port: int, state: State) -> None:
    """Say what the server on `port` is doing; a note that cannot be written only costs the plush its hint."""
    if port <= 0:
        return
    path = note_path(port)
    with suppress(OSError):
        path.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), "state": state}))
        path.with_suffix(".tmp").replace(path)


def withdraw(port: int) -> None:
    """The server stopped cleanly: no note."""
    if port > 0:
        with suppress(OSError):
            note_path(port).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: alive
        return True
    return True


@dataclass(frozen=True)
class Hint:
    """What to tell an owner whose plush cannot reach `target`."""

    text: str
    died: bool = False
    """A local server that ended without stopping: waiting for it is pointless."""


def unreachable_hint(target: str) -> Hint:
    """A local server still loading, one that died, or (no note, or not this computer) the general question."""
    host, _, port = target.rpartition(":")
    if host not in LOOPBACK or not port.isdigit():
        return Hint("is `plush server` running there?")
    try:
        note = json.loads(note_path(int(port)).read_text())
        pid, state = int(note["pid"]), str(note["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return Hint("is `plush server` running?")
    if not _alive(pid):
        return Hint(f"the server started here (pid {pid}) ended without stopping: it crashed or was killed", True)
    if state == "loading":
        return Hint(f"the server here (pid {pid}) is still loading its models")
    return Hint(f"the server here (pid {pid}) is running but does not answer")
