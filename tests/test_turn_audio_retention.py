"""Kept reply audio goes with its turn: a turn past `retention_days` leaves no WAV file behind, a newer one keeps
its own, and files left by turns that are gone are swept at the first pass after a start. Real server on
127.0.0.1 with `[dashboard] keep_audio` on."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from conftest import ConfigFactory
from fakes.dashboard_client import chat

from plush.server.app import RunningServer, start_server
from plush.server.memory import DAY_S
from plush.server.retention import AUDIO_DIR


async def spoken_turn(server: RunningServer, text: str) -> Path:
    """One text turn with audio; the path of the reply's kept WAV file (written once the feed is flushed)."""
    turn_id = await chat(server.port, text, want_audio=True)
    assert server.dashboard is not None
    await server.companion.wait_stored()
    await server.dashboard.state.feed.flush()
    path = server.dashboard.state.feed.audio_path(turn_id)
    assert path is not None and path.stat().st_size > 44, "the reply's audio should be kept"
    return path


async def test_a_turn_past_retention_days_leaves_no_audio_file_behind(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(
        dashboard={"port": 0, "keep_audio": True},
        memory={"retention_days": 2},
        server={"port": 0, "database": str(tmp_path / "plush.db")},
    )
    stray = tmp_path / AUDIO_DIR / "0123456789abcdef.wav"  # left by an earlier version: its turn is long gone
    stray.parent.mkdir()
    stray.write_bytes(b"RIFF")
    server = await start_server(config)
    try:
        assert server.retention is not None
        old = await spoken_turn(server, "a story about a red kite")
        await server.retention.apply(now=time.time() + 1 * DAY_S)  # not old enough yet
        assert old.is_file() and not stray.exists()
        newer = await spoken_turn(server, "and one about a blue boat")
        with sqlite3.connect(tmp_path / "plush.db") as db:  # the first turn is three days old, as if time passed
            db.execute("UPDATE turns SET started_at = started_at - ? WHERE id = ?", (3 * DAY_S, old.stem))
        assert await server.retention.apply() == 1
        assert not old.exists(), "the audio of a deleted turn must go with it"
        assert newer.is_file()
        assert sorted(p.name for p in stray.parent.iterdir()) == [newer.name]
    finally:
        await server.stop(grace=0.5)
