"""Faults in a turn's life (issue #9): shutdown mid-reply, streams left open, bursts of abandoned turns, refusals a
client can read, and a turn log that keeps every turn with its outcome. Real servers on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from conftest import GEMINI_TEST_KEY, PLUSH_COMMAND, ConfigFactory, config_sections
from speech_signals import silence, utterance, voiced
from tiny_models import TinyModels

from plush.device.client import AuthError, CompanionClient, ServerError
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc
from plush.server.app import RunningServer, start_server
from plush.server.store import Store, TurnRecord
from plush.server.store.sqlite import MIGRATIONS, OUTCOME_MIGRATION

START = pb.TurnRequest(start=pb.TurnStart(want_audio=False))
END = pb.TurnRequest(end=pb.TurnEnd())
CANCEL = pb.TurnRequest(cancel=pb.Cancel(reason="test"))


def frames(pcm: bytes, rate: int = 16000, ms: int = 40) -> list[pb.TurnRequest]:
    """Audio as the plush sends it: one 40 ms chunk per message."""
    step = rate * ms // 1000 * 2
    return [
        pb.TurnRequest(audio=pb.AudioChunk(data=pcm[i : i + step], sample_rate=rate, channels=1))
        for i in range(0, len(pcm), step)
    ]


SPEECH = frames(utterance(voiced(3.0)))


@pytest.fixture
async def server_with(make_config: ConfigFactory, tmp_path: Path) -> AsyncIterator[Any]:
    """Start a real server with some `[server]` keys changed; it stops at the end."""
    running: list[RunningServer] = []

    async def start(**server: Any) -> RunningServer:
        config = make_config(server={"port": 0, "database": str(tmp_path / "plush.db"), **server})
        running.append(await start_server(config))
        return running[-1]

    yield start
    for server in running:
        await server.stop(grace=0)


def stub(channel: grpc.aio.Channel) -> pb_grpc.CompanionStub:
    return pb_grpc.CompanionStub(channel)


def as_device(name: str) -> tuple[tuple[str, str], ...]:
    return (("plush-device-id", name),)


async def status(call: Any) -> tuple[grpc.StatusCode, str, list[pb.TurnEvent]]:
    """Read a call to its end: its status code, details and the events it gave."""
    events: list[pb.TurnEvent] = []
    try:
        async for event in call:
            events.append(event)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", events
    return grpc.StatusCode.OK, "", events


async def stored(server: RunningServer, count: int) -> list[TurnRecord]:
    """The turn log once it holds `count` turns (oldest first); a turn ended by a hang-up is written just after."""
    turns: list[TurnRecord] = []
    for _ in range(100):
        turns = await server.companion.store.list_turns(limit=1000)
        if len(turns) >= count:
            break
        await asyncio.sleep(0.05)
    return turns[::-1]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait for server state that has no event of its own to wait on."""
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within {within_s} s: {condition.__doc__ or 'condition'}")


async def answered(port: int, device: str = "after-the-fault") -> None:
    """A normal spoken (transcribed on the plush) turn gets its whole reply."""
    async with CompanionClient(f"127.0.0.1:{port}", device) as client:
        call = await client.converse(pb.TurnStart(want_audio=True), transcript="Are you still there?")
        async with asyncio.timeout(30):
            events = [event async for event in call.events()]
    assert events[-1].WhichOneof("kind") == "done" and not events[-1].done.interrupted
    assert "".join(e.text_delta.text for e in events).strip()


# -- 1. shutdown ------------------------------------------------------------------------------------------------


def _start_process(config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`plush server` in its own process; its output is read all along (a full pipe would block it)."""
    proc = subprocess.Popen(
        [*PLUSH_COMMAND, "server", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    if not listening.wait(60):
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    match = re.search(r"listening on (\S+:\d+)", "".join(lines))
    assert match is not None
    return proc, match.group(1), lines


async def test_sigterm_mid_reply_stores_the_turn_as_interrupted_and_exits_cleanly(
    models: TinyModels, tmp_path: Path, fake_gemini: Any
) -> None:
    fake_gemini.reply(*[f"Sentence number {i}. " for i in range(12)], chunk_delay=0.3)
    sections = config_sections(models, tmp_path)
    gemini = {"base_url": fake_gemini.base_url, "timeout_s": 5, "client_share": 1.0}
    sections["llm"] = {"backend": "auto", "gemini": gemini, "llama": sections["llm"]["llama"]}
    config = tmp_path / "plush.toml"
    config.write_text(tomli_w.dumps(sections), encoding="utf-8")
    proc, address, output = _start_process(config, {**os.environ, "GEMINI_API_KEY": GEMINI_TEST_KEY})
    started = 0.0
    try:
        said = ""
        async with CompanionClient(address, "sigterm-plush") as client:
            with pytest.raises(ServerError):
                async for event in client.chat("Tell me a long story.", want_audio=True):
                    said += event.text_delta.text
                    if "Sentence number 1." in said and not started:
                        proc.send_signal(signal.SIGTERM)  # once: a second signal means "quit at once"
                        started = time.monotonic()
        returncode = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(output)
    assert returncode == 0, log
    assert time.monotonic() - started < 10, "a graceful stop is quick"
    assert "turn_not_stored" not in log, log

    async with await Store.open(tmp_path / "plush.db") as store:
        (turn,) = await store.list_turns()
    assert turn.outcome == "interrupted" and turn.interrupted and turn.ending == "shutdown"
    assert turn.reply_text.startswith("Sentence number 0. Sentence number 1.")
    assert "Sentence number 11" not in turn.reply_text


# -- 2. deadlines and bounds ------------------------------------------------------------------------------------


async def test_a_stream_left_open_ends_with_deadline_exceeded_and_is_stored_as_abandoned(server_with: Any) -> None:
    server = await server_with(idle_timeout_s=1.0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = stub(channel).Converse(metadata=as_device("left-open"))
        await call.write(START)
        for request in SPEECH[:10]:
            await call.write(request)
        started = time.monotonic()
        async with asyncio.timeout(10):  # before: no event and no status, ever
            code, details, _ = await status(call)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "server.idle_timeout_s" in details
    assert time.monotonic() - started < 4
    (turn,) = await stored(server, 1)
    assert turn.outcome == "abandoned" and "idle_timeout_s" in turn.error
    assert server.in_flight.count == 0


BURST = 200


def _rss_mb() -> float:
    """This process's resident memory (the server runs in it), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_a_burst_of_abandoned_streams_leaves_the_next_turn_answered(server_with: Any) -> None:
    """200 streams of 3 s speech, half hung up and half cancelled: the next turn is answered at once and the
    server's memory is back near where it started (the testers saw 0.8 -> 2.2 GB and a 60 s stall)."""
    server = await server_with(max_turns_in_flight=8, max_stt_in_flight=2)
    await answered(server.port)  # models warm, so what follows measures the burst
    baseline_mb = _rss_mb()
    codes: list[grpc.StatusCode] = []

    async def abandon(i: int, channel: grpc.aio.Channel) -> None:
        call = stub(channel).Converse(metadata=as_device(f"burst-{i}"))
        try:
            await call.write(START)
            for request in SPEECH:
                await call.write(request)
            if i % 2:
                call.cancel()  # the client hangs up
                return
            await call.write(CANCEL)  # the client cancels the turn, then reads how it ended
            await call.done_writing()
            codes.append((await status(call))[0])
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel, asyncio.timeout(120):
        for start in range(0, BURST, 20):  # 20 at a time: a crowd of plushes, bounded in count and time
            await asyncio.gather(*(abandon(i, channel) for i in range(start, start + 20)))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes

    # Cancelled turns let go of their place and of the speech recognition at once.
    await until(lambda: not server.in_flight.count and not _stt_workers(), within_s=10)
    async with asyncio.timeout(10):
        await answered(server.port)
    assert _rss_mb() - baseline_mb < 300, f"memory grew from {baseline_mb:.0f} to {_rss_mb():.0f} MB"
    turns = await stored(server, BURST + 2)
    assert len(turns) == BURST + 2
    burst = [turn for turn in turns if turn.device_id.startswith("burst-")]
    assert {turn.outcome for turn in burst} <= {"abandoned", "refused"}
    assert any(turn.outcome == "refused" and "server.max_" in turn.error for turn in burst), "the bounds held"
    assert turns[-1].outcome == "answered"


def _stt_workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "plush-streaming-stt" and thread.is_alive()]


async def test_a_turn_past_max_turns_in_flight_is_refused_at_once(server_with: Any) -> None:
    server = await server_with(max_turns_in_flight=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        holding = []
        for i in range(2):
            call = stub(channel).Converse(metadata=as_device(f"holder-{i}"))
            await call.write(START)
            holding.append(call)
        await until(lambda: server.in_flight.count == 2)
        started = time.monotonic()
        one_more = stub(channel).Converse(iter([START, pb.TurnRequest(transcript=pb.Transcript(text="hi")), END]))
        code, details, _ = await status(one_more)
        for call in holding:
            call.cancel()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_turns_in_flight" in details
    assert time.monotonic() - started < 2


async def test_a_new_turn_from_the_same_plush_replaces_its_open_one(server_with: Any) -> None:
    server = await server_with()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        older = stub(channel).Converse(metadata=as_device("kitchen"))
        await older.write(START)
        for request in SPEECH[:5]:
            await older.write(request)
        await until(lambda: server.in_flight.count == 1)
        newer = stub(channel).Converse(
            iter([START, pb.TurnRequest(transcript=pb.Transcript(text="Hello again")), END]),
            metadata=as_device("kitchen"),
        )
        async with asyncio.timeout(30):
            (old_code, old_details, _), (new_code, _, events) = await asyncio.gather(status(older), status(newer))
    assert old_code == grpc.StatusCode.ABORTED and "a newer turn from this plush" in old_details
    assert new_code == grpc.StatusCode.OK and events[-1].WhichOneof("kind") == "done"
    outcomes = {turn.user_text: turn.outcome for turn in await stored(server, 2)}
    assert outcomes == {"": "abandoned", "Hello again": "answered"}


# -- 3. refusals a client can read ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [("wrong-token", "the token of plush 'kitchen' is not accepted"), (None, "needs a device token")],
)
async def test_a_refused_token_on_converse_reads_unauthenticated_with_the_message(
    make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch, token: str | None, message: str
) -> None:
    monkeypatch.setenv("PLUSH_DEVICE_TOKENS", "kitchen=s3cret-kitchen")
    running = await start_server(make_config())
    try:
        async with CompanionClient(f"127.0.0.1:{running.port}", "kitchen", token=token) as client:
            with pytest.raises(AuthError, match=message):  # before: INTERNAL "Internal error from Core"
                call = await client.converse(pb.TurnStart(), pcm=utterance(voiced(1.0)))
                [event async for event in call.events()]
    finally:
        await running.stop(grace=0)


async def test_an_oversized_message_is_refused_with_a_status_the_client_reads(server_with: Any) -> None:
    server = await server_with()
    big = pb.TurnRequest(audio=pb.AudioChunk(data=bytes(5 << 20), sample_rate=16000, channels=1))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = stub(channel).Converse()
        for request in (START, big, *SPEECH[:20], END):  # the writes after the big one must not fail
            await call.write(request)
        code, details, _ = await status(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # before: INTERNAL "Internal error from Core"
    assert "5.0 MiB is over this server's 4 MiB limit (server.max_message_mb)" in details
    (turn,) = await stored(server, 1)
    assert turn.outcome == "refused"


async def test_a_conversation_id_over_128_characters_is_refused(server_with: Any) -> None:
    server = await server_with()
    async with CompanionClient(f"127.0.0.1:{server.port}", "long-names") as client:
        with pytest.raises(ServerError, match=r"INVALID_ARGUMENT.*conversation_id is 1000000 characters; at most 128"):
            [e async for e in client.chat("Hi!", conversation_id="x" * 1_000_000)]
    (turn,) = await stored(server, 1)
    assert turn.outcome == "refused" and turn.conversation_id == "chat:long-names"


# -- 4. every turn is stored with its outcome -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "code", "message", "outcome"),
    [
        ([START, *frames(utterance(silence(1.0))), END], "INVALID_ARGUMENT", "no speech was recognised", "no_speech"),
        ([START, *SPEECH[:10], CANCEL], "OK", "", "abandoned"),
        ([START], "INVALID_ARGUMENT", "closed before TurnEnd", "abandoned"),
        ([START, *frames(bytes(3200), rate=4000), END], "INVALID_ARGUMENT", "sample rate 4000 Hz", "refused"),
    ],
    ids=["no-speech", "cancelled-before-end", "start-then-half-close", "protocol-mistake"],
)
async def test_turns_that_end_without_a_reply_are_stored_with_their_outcome(
    running_server: Any, requests: list[pb.TurnRequest], code: str, message: str, outcome: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_server.port}") as channel:
        got, details, _ = await status(stub(channel).Converse(iter(requests), metadata=as_device("outcomes")))
    assert got.name == code and message in details
    (turn,) = await stored(running_server, 1)
    assert turn.outcome == outcome and turn.device_id == "outcomes"
    await answered(running_server.port)


async def test_a_turn_whose_client_hangs_up_before_turn_end_is_stored_as_abandoned(running_server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_server.port}") as channel:
        call = stub(channel).Converse(metadata=as_device("hang-up"))
        for request in (START, *SPEECH[:10]):
            await call.write(request)
        await until(lambda: running_server.in_flight.count == 1)
        call.cancel()
    (turn,) = await stored(running_server, 1)
    assert turn.outcome == "abandoned"


async def test_a_turn_that_cannot_be_stored_leaves_nothing_behind(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "plush.db") as store:
        await store.add_turn(TurnRecord("t1", "room", "d", "chat", "hello", "hi"))
        with pytest.raises(Exception, match="UNIQUE"):
            await store.add_turn(TurnRecord("t1", "another-room", "d", "chat", "again", "hi"))
        await store.add_usage("2026-01-01", "requests")  # commits whatever the connection still holds
        assert [c.id for c in await store.list_conversations()] == ["room"]
        assert [t.id for t in await store.search_turns(["again"], limit=5, owner="device:d")] == []


async def test_older_turns_get_an_outcome_when_the_store_upgrades(tmp_path: Path) -> None:
    import aiosqlite

    path = tmp_path / "plush.db"
    async with aiosqlite.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[: MIGRATIONS.index(OUTCOME_MIGRATION)], start=1):
            await db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        for turn_id, reply, error, interrupted in [
            ("fine", "Hello!", "", 0),
            ("cut", "Once upon", "", 1),
            ("failed", "", "LlmError: boom", 0),
        ]:
            await db.execute(
                "INSERT INTO turns (id, conversation_id, device_id, source, started_at, user_text, reply_text, error,"
                " interrupted, owner) VALUES (?, 'room', 'd', 'chat', 1.0, 'hi', ?, ?, ?, 'device:d')",
                (turn_id, reply, error, interrupted),
            )
        await db.commit()
    async with await Store.open(path) as store:
        outcomes = {turn.id: turn.outcome for turn in await store.list_turns()}
    assert outcomes == {"fine": "answered", "cut": "interrupted", "failed": "error"}


async def test_a_database_a_column_short_of_its_version_gets_the_column_and_stores_turns(tmp_path: Path) -> None:
    """A development build migrated it before its migration grew a column (seen: `no such column: ending`, every
    turn an error): the store adds what is missing instead of failing every turn."""
    import aiosqlite

    path = tmp_path / "plush.db"
    async with aiosqlite.connect(path) as db:
        for number, migration in enumerate(MIGRATIONS, start=1):
            script = migration.replace("ALTER TABLE turns ADD COLUMN ending TEXT NOT NULL DEFAULT ''", "SELECT 1")
            await db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
    async with await Store.open(path) as store:
        await store.add_turn(TurnRecord("t1", "room", "d", "chat", "hi", "hello", outcome="interrupted", ending="x"))
        [turn] = await store.list_turns()
    assert (turn.outcome, turn.ending) == ("interrupted", "x")


def test_a_turn_keeps_every_error_it_met() -> None:
    turn = TurnRecord("t", "room", "d", "chat", "hi")
    for message in (
        "LlmError: the local model is busy",
        "voice failed: piper crashed",
        "LlmError: the local model is busy",
    ):
        turn.add_error(message)
    assert turn.error == "LlmError: the local model is busy; voice failed: piper crashed"


async def test_a_plush_that_keeps_streaming_to_a_refused_turn_reads_the_refusal(server_with: Any) -> None:
    """Audio sent after the server ended the call must surface the server's reason, not "RPC already finished".
    The server waits for a refused plush's TurnEnd only as long as its turn may last (here 1 s + 1 s)."""
    server = await server_with(stt_on_server=False, max_audio_seconds=1, idle_timeout_s=1)
    async with CompanionClient(f"127.0.0.1:{server.port}", "streamer") as client:
        call = await client.start_turn(pb.TurnStart())
        with pytest.raises(ServerError) as refused:
            for _ in range(200):  # well past the turn's 2 s
                await call.send_audio(utterance(voiced(0.2)), 16000)
                await asyncio.sleep(0.02)
    assert "RPC already finished" not in str(refused.value)
    assert "refused the turn" in str(refused.value), str(refused.value)


async def test_a_plush_refused_for_speech_recognition_holds_no_place_while_it_finishes_speaking(
    server_with: Any,
) -> None:
    """Refused at its first audio chunk, a plush streams on until its button is let go; meanwhile its turn is
    over and stored, and a place for a turn (server.max_turns_in_flight) is free for the next plush."""
    server = await server_with(max_turns_in_flight=2, max_stt_in_flight=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        holder = stub(channel).Converse(metadata=as_device("holder"))  # holds the one place in STT
        await holder.write(START)
        await holder.write(SPEECH[0])
        await until(lambda: server.in_flight._stt_in_use == 1)
        speaking = stub(channel).Converse(metadata=as_device("speaking"))
        await speaking.write(START)
        await speaking.write(SPEECH[0])  # refused here: speech recognition is full
        assert [t.device_id for t in await stored(server, 1)] == ["speaking"]  # stored as refused
        await until(lambda: server.in_flight.count == 1)  # its place is free though it is still speaking
        await answered(server.port)  # so another plush is answered, not refused for max_turns_in_flight
        for request in SPEECH[1:10]:
            await speaking.write(request)
        await speaking.write(END)
        code, details, _ = await status(speaking)
        holder.cancel()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "server.max_stt_in_flight" in details
    turns = await stored(server, 2)
    assert [(t.device_id, t.outcome) for t in turns] == [("speaking", "refused"), ("after-the-fault", "answered")]


async def test_a_plush_still_speaking_when_refused_for_load_reads_resource_exhausted(server_with: Any) -> None:
    """A plush opens its turn at button down and streams while the owner speaks (here 3 s, past the 2 s a
    refusal waits for a stranger): it must still read why it was refused, not "Internal error from Core". The
    server reads its whole question first: a write failing mid-question is where grpc-python loses the status
    (under load, 32 plushes, some read INTERNAL)."""
    server = await server_with(max_turns_in_flight=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        holder = stub(channel).Converse(metadata=as_device("holder"))
        await holder.write(START)
        await until(lambda: server.in_flight.count == 1)
        speaking = stub(channel).Converse(metadata=as_device("speaking"))
        await speaking.write(START)
        frame = pb.TurnRequest(audio=pb.AudioChunk(data=bytes(1280), sample_rate=16000, channels=1))
        for _ in range(75):  # 3 s of audio in 40 ms frames, at the pace it is spoken
            await speaking.write(frame)
            await asyncio.sleep(0.04)
        await speaking.write(END)
        await speaking.done_writing()
        code, details, _ = await status(speaking)
        holder.cancel()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "server.max_turns_in_flight" in details


async def test_a_message_over_the_transport_limit_is_stored_with_what_happened(server_with: Any) -> None:
    server = await server_with()
    huge = pb.TurnRequest(audio=pb.AudioChunk(data=bytes(17 << 20), sample_rate=16000, channels=1))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = stub(channel).Converse(metadata=as_device("huge"))
        for request in (START, huge):
            await call.write(request)
        code, _, _ = await status(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    (turn,) = await stored(server, 1)
    assert turn.outcome == "abandoned"
    assert "16 MiB transport limit" in turn.error  # before: only "the request stream closed before TurnEnd"
