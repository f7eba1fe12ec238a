"""Small pieces on their own: the space-bar logic, sentence chunking, the store, config, audio and personas."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plush.config import PlushConfig, default_config_text, load_config
from plush.device.controls import ButtonEvent, HoldOrTap
from plush.errors import ConfigError
from plush.server.in_flight import StopReason
from plush.server.persona import load_persona
from plush.server.store import Store, TurnRecord
from plush.server.store.records import ENDINGS, REPLICA_LOST
from plush.server.store.sqlite import MIGRATIONS
from plush.voice_models.audio import chunk_pcm, float_to_pcm16, pcm16_to_float, resample_pcm16

DOWN, UP = ButtonEvent.DOWN, ButtonEvent.UP


def feed(detector: HoldOrTap, keys: list[float], until: float) -> list[tuple[float, ButtonEvent]]:
    """Drive the detector with key presses at `keys` and ticks every 10 ms up to `until`."""
    events: list[tuple[float, ButtonEvent]] = []
    pending = sorted(keys)
    t = 0.0
    while t <= until:
        while pending and pending[0] <= t:
            events += [(t, e) for e in detector.key(pending.pop(0))]
        events += [(t, e) for e in detector.tick(t)]
        t = round(t + 0.01, 3)
    return events


def test_holding_space_is_push_to_talk() -> None:
    repeats = [0.0] + [0.5 + 0.033 * i for i in range(30)]  # repeat delay 500 ms, then ~30 Hz
    events = feed(HoldOrTap(), repeats, until=3.0)
    assert [e for _, e in events] == [DOWN, UP]
    assert events[1][0] == pytest.approx(repeats[-1] + 0.16, abs=0.02)


def test_tapping_space_toggles_listening() -> None:
    events = feed(HoldOrTap(), [0.0, 2.0], until=3.0)
    assert events == [(0.0, DOWN), (2.0, UP)]


def test_holding_the_second_tap_does_not_start_a_new_turn() -> None:
    keys = [0.0, 2.0] + [2.5 + 0.033 * i for i in range(10)]
    assert [e for _, e in feed(HoldOrTap(), keys, until=4.0)] == [DOWN, UP]


async def test_store_migrates_uses_wal_and_returns_the_window_oldest_first(tmp_path: Path) -> None:
    db = tmp_path / "data" / "plush.db"
    store = await Store.open(db)
    for i in range(5):
        await store.add_turn(TurnRecord(f"t{i}", "room", "dev", "chat", f"q{i}", f"a{i}", started_at=100.0 + i))
    await store.add_turn(TurnRecord("other", "elsewhere", "dev", "chat", "x", "y", started_at=200.0))
    await store.add_turn(TurnRecord("failed", "room", "dev", "chat", "q-failed", "", error="boom", started_at=300.0))
    window = await store.recent_turns("room", 3, owner="device:dev")
    assert [t.id for t in window] == ["t2", "t3", "t4"]
    assert (await store.get_turn("failed")) is not None
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()

    reopened = await Store.open(db)  # migrations are not applied twice
    assert len(await reopened.list_turns()) == 7
    await reopened.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_store_refuses_a_database_from_a_newer_plush(tmp_path: Path) -> None:
    db = tmp_path / "plush.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="newer Plush"):
        await Store.open(db)


def test_shipped_default_config_equals_the_code_defaults() -> None:
    from_file = PlushConfig(**tomllib.loads(default_config_text()))
    assert from_file == load_config(search=False)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plush.toml"
    path.write_text("[server]\nport = 7000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("PLUSH_SERVER__PORT", "7001")
    config = load_config(path)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 7001)


def test_config_is_found_in_the_working_directory(tmp_path: Path) -> None:
    Path("plush.toml").write_text("[device]\nid = 'bear'\n")  # the autouse fixture made cwd a temp folder
    assert load_config().device.id == "bear"


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_pcm_round_trip_and_resampling_keep_duration() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32) * 0.5
    pcm = float_to_pcm16(tone)
    assert np.allclose(pcm16_to_float(pcm), tone, atol=1e-4)
    resampled = resample_pcm16(pcm, 22050, 16000)
    assert len(resampled) == 2 * 16000
    chunks = list(chunk_pcm(resampled, 16000, 100))
    assert len(chunks) == 10 and all(len(c) == 3200 for c in chunks)


@pytest.mark.parametrize("name", ["en", "ko"])
def test_built_in_personas_load_and_give_a_stable_prompt(name: str) -> None:
    persona = load_persona(name)
    assert persona.language == name
    assert persona.system_prompt == load_persona(name).system_prompt
    assert persona.name in persona.system_prompt
    assert persona.spec.fallback_line


def test_persona_file_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("name = 'Bo'\nlanguage = 'en'\nstyle = 'kind'\n")
    with pytest.raises(ConfigError, match="'fallback_line': Field required"):
        load_persona(str(path))


def test_the_jitter_buffer_waits_to_fill_up_and_again_after_running_dry() -> None:
    from plush.device.audio_io import JitterBuffer

    buffer = JitterBuffer(prebuffer=8)
    buffer.write(b"\x01\x01\x01\x01")
    assert buffer.read(4) == (b"\x00" * 4, False), "not enough yet: silence"
    buffer.write(b"\x02\x02\x02\x02")
    assert buffer.read(4) == (b"\x01" * 4, False)
    assert buffer.read(6) == (b"\x02" * 4 + b"\x00\x00", False), "ran dry mid-reply"
    assert buffer.underruns == 1
    buffer.write(b"\x03\x03")
    assert buffer.read(2) == (b"\x00\x00", False), "waits to fill up again rather than stutter"
    buffer.complete()
    assert buffer.read(4) == (b"\x03\x03\x00\x00", True), "the end of the reply plays without waiting"


def test_a_cleared_jitter_buffer_is_finished_at_once() -> None:
    from plush.device.audio_io import JitterBuffer

    buffer = JitterBuffer(prebuffer=4)
    buffer.write(b"\x05" * 100)
    buffer.clear()
    assert buffer.read(4) == (b"\x00" * 4, True)


def test_a_turn_says_why_it_ended_in_the_logs_one_vocabulary() -> None:
    def turn(**fields: Any) -> TurnRecord:
        return TurnRecord("t", "c", "d", "chat", "hi", **fields)

    assert turn(outcome="blocked", safety="input:self_harm").reason == "self_harm"
    assert turn(outcome="blocked", safety="gemini:HARM_CATEGORY_HARASSMENT").reason == "HARM_CATEGORY_HARASSMENT"
    assert turn(outcome="interrupted", ending="revoked").reason == "revoked"
    assert turn(outcome="answered").reason == turn(outcome="error", error="boom").reason == ""
    said_by_the_service = {"barge_in", "client_not_reading", "client_hung_up"}
    left_by_a_dead_replica = {REPLICA_LOST}
    assert set(ENDINGS) == said_by_the_service | left_by_a_dead_replica | {reason.name.lower() for reason in StopReason}
