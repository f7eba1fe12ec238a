"""scripts/cluster as a person runs it: it brings up PostgreSQL, Redis, three replicas and nginx on 127.0.0.1 from a
scratch folder, pairs a plush through the balancer and says how to talk to it; `plush chat` with what it printed is
answered through the balancer and stored in the cluster's PostgreSQL; `scripts/cluster stop` from another terminal
ends every process it started."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

from conftest import REPO

from plush.server.store import Store, TurnRecord

READY = "Stop it all"


def _lines_until(proc: subprocess.Popen[str], marker: str, within_s: float) -> list[str]:
    """What the process printed up to the line holding `marker` (its output is drained on, after)."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError("scripts/cluster did not come up:\n" + "".join(seen))


async def _stored_turns(database: str) -> list[TurnRecord]:
    async with await Store.open(database) as store:
        return await store.list_turns()


def _processes_mentioning(text: str) -> list[str]:
    """The command lines of running processes that hold `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(") ", 1)[-1][:1]
        except OSError:
            continue
        if text in command and state not in ("Z", "X"):
            found.append(command)
    return found


def test_scripts_cluster_comes_up_answers_through_the_balancer_and_stop_leaves_nothing_running(
    config_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cluster"
    started = time.monotonic()
    launcher = subprocess.Popen(
        [str(REPO / "scripts" / "cluster"), "--config", str(config_file), "--folder", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        said = "".join(_lines_until(launcher, READY, within_s=75))
        state = json.loads((folder / "cluster.json").read_text(encoding="utf-8"))
        postgres_folder = Path(state["postgres_folder"])
        talk = re.search(r"XDG_DATA_HOME=(\S+) (\S+) chat", said)
        database = re.search(r"database\s+(postgresql://\S+)", said)
        assert talk and database, said
        assert len(re.findall(r"127\.0\.0\.1:\d+", said.split("replicas", 1)[1].splitlines()[0])) == 3, said

        chatted = subprocess.run(
            [talk.group(2), "chat"],
            input="Hello there!\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "XDG_DATA_HOME": talk.group(1)},
        )
        assert chatted.returncode == 0, chatted.stderr
        assert chatted.stdout.startswith("plush> ") and chatted.stdout.strip() != "plush>", chatted.stdout
        [turn] = asyncio.run(_stored_turns(database.group(1)))
        assert (turn.device_id, turn.user_text, turn.outcome) == ("plush", "Hello there!", "answered")

        stop = subprocess.run(
            [str(REPO / "scripts" / "cluster"), "stop", "--folder", str(folder)],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped the cluster" in stop.stdout, stop.stdout  # not "no cluster was running"
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            launcher.terminate()
            launcher.wait(timeout=60)
    assert _processes_mentioning(str(folder)) == [], "every process the cluster started has ended"
    assert _processes_mentioning(str(postgres_folder)) == [] and not postgres_folder.exists()
    assert not (folder / "cluster.json").exists()
    assert time.monotonic() - started < 90
