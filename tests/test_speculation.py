"""The brain started at the pause (plush/server/speculation.py): a real server, the real google-genai client
against the fake Gemini, the tiny llama behind it, and plushes speaking the contract's Settled message.

Each case reads what Gemini was asked (the fake records every request) and what the turn log stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import StartServer, chat_reply
from fakes.gemini import FakeGemini

from plush.device.client import CompanionClient, ConverseCall
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.dashboard.charts import chart_data
from plush.server.speculation import normalise
from plush.server.store import TurnRecord


async def _requests(fake: FakeGemini, count: int) -> None:
    """Wait (in a thread: the fake's wait blocks) until Gemini has been asked `count` times."""
    await asyncio.to_thread(fake.wait_for_requests, count, 10.0)


async def _finish(call: ConverseCall, text: str) -> str:
    """Release: the final transcript and TurnEnd; the reply's text."""
    await call.send_transcript(text)
    await call.end()
    events = [event async for event in call.events()]
    return "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")


async def _stored(server: Any, user_text: str) -> TurnRecord:
    await server.companion.wait_stored()
    turns = [t for t in await server.companion.store.list_turns(limit=10) if t.user_text == user_text]
    assert turns, f"no stored turn for {user_text!r}"
    return turns[0]


def _spent(turn: TurnRecord) -> tuple[int, int, int, int, int]:
    return (
        turn.speculations,
        turn.speculations_adopted,
        turn.speculations_wasted,
        turn.speculation_gemini_requests,
        turn.speculation_gemini_wasted,
    )


def _server_section(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return {"port": 0, "database": str(tmp_path / "plush.db"), **settings}


@pytest.fixture
async def server(start_gemini_server: StartServer) -> Any:
    return await start_gemini_server()


def test_normalise_leaves_out_case_punctuation_and_spacing() -> None:
    assert normalise("Do rabbits  hop?") == normalise("do rabbits hop") == "do rabbits hop"
    assert normalise("토끼는 뛰어요?") == "토끼는 뛰어요"
    assert normalise("Do rabbits hop?") != normalise("Do rabbits hop far?")


async def test_the_same_final_text_adopts_the_answer_already_under_way(server: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply("Rabbits hop. ", "They love carrots.")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-adopt") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("Do rabbits hop?")
        await _requests(fake_gemini, 1)  # the brain started before the release
        reply = await _finish(call, "do rabbits hop")
    assert reply == "Rabbits hop. They love carrots."
    assert len(fake_gemini.requests) == 1, "the adopted speculation was the turn's only Gemini request"
    assert fake_gemini.requests[0].turns[-1] == ("user", "Do rabbits hop?")
    turn = await _stored(server, "do rabbits hop")
    assert turn.reply_text == reply and turn.backend == "gemini" and turn.outcome == "answered"
    assert _spent(turn) == (1, 1, 0, 1, 0)


async def test_speaking_on_cancels_the_speculation_and_nothing_of_it_is_said(
    server: Any, fake_gemini: FakeGemini
) -> None:
    # The speculation's answer would go on 30 s later: it is still in flight when the owner speaks on.
    fake_gemini.reply("Cats purr. ", "Cats nap all day.", chunk_delay=30)
    fake_gemini.reply("Cats and dogs can be friends.")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-spoke-on") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=True))
        await call.send_settled("Tell me about cats")
        await _requests(fake_gemini, 1)
        await call.send_settled("")  # the owner spoke on
        reply = await _finish(call, "Tell me about cats and dogs")
    assert reply == "Cats and dogs can be friends."
    assert len(fake_gemini.requests) == 2
    turn = await _stored(server, "Tell me about cats and dogs")
    assert "purr" not in turn.reply_text and turn.outcome == "answered"
    assert _spent(turn) == (1, 0, 1, 1, 1)
    leftover = [t for t in asyncio.all_tasks() if t.get_name() == "plush-speculation" and not t.done()]
    assert leftover == [], "a cancelled speculation does not outlive its turn"


async def test_a_different_final_text_cancels_the_speculation(server: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply("A cat says meow.")
    fake_gemini.reply("A dog says woof.")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-differs") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("What does a cat say?")
        await _requests(fake_gemini, 1)
        reply = await _finish(call, "What does a dog say?")
    assert reply == "A dog says woof."
    assert [r.turns[-1][1] for r in fake_gemini.requests] == ["What does a cat say?", "What does a dog say?"]
    turn = await _stored(server, "What does a dog say?")
    assert turn.reply_text == "A dog says woof."
    assert _spent(turn) == (1, 0, 1, 1, 1)


async def test_at_most_the_settable_number_of_speculations_and_one_in_flight(
    start_gemini_server: StartServer, fake_gemini: FakeGemini, tmp_path: Path
) -> None:
    server = await start_gemini_server(server=_server_section(tmp_path, max_speculations=2))
    for answer in ("One.", "Two.", "Three.", "Four."):
        fake_gemini.reply(answer, chunk_delay=0.0)
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-most") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("I want")
        await _requests(fake_gemini, 1)
        await call.send_settled("I want a")  # a newer settled text replaces the one in flight
        await _requests(fake_gemini, 2)
        await call.send_settled("I want a story")  # the third: over the limit, not started
        reply = await _finish(call, "I want a story")
    assert reply == "Three."
    assert len(fake_gemini.requests) == 3
    turn = await _stored(server, "I want a story")
    assert _spent(turn) == (2, 0, 2, 2, 2)


async def test_the_budget_guard_keeps_the_real_turn_its_gemini_request(
    start_gemini_server: StartServer, fake_gemini: FakeGemini
) -> None:
    """One request a minute: a speculation would take the real turn's, so none is sent, and the local model does
    not answer in Gemini's place either; the real turn gets Gemini."""
    server = await start_gemini_server(gemini={"requests_per_minute": 1})
    fake_gemini.reply("Hello from Gemini.")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-budget") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("Hello there")
        reply = await _finish(call, "Hello there")
    assert reply == "Hello from Gemini."
    assert len(fake_gemini.requests) == 1
    turn = await _stored(server, "Hello there")
    assert (turn.backend, turn.backend_reason) == ("gemini", "primary")
    assert _spent(turn) == (0, 0, 0, 0, 0)


async def test_the_budget_guard_keeps_the_clients_share(
    start_gemini_server: StartServer, fake_gemini: FakeGemini
) -> None:
    """Four a minute, half of it per plush: after one turn the plush's share has room for one more request, so the
    next turn's speculation is held back and its real request goes to Gemini."""
    server = await start_gemini_server(gemini={"requests_per_minute": 4, "client_share": 0.5})
    fake_gemini.reply("First answer.")
    fake_gemini.reply("Second answer.")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-share") as client:
        first = await client.converse(pb.TurnStart(want_audio=False), transcript="First question")
        assert [e async for e in first.events()]
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("Second question")
        reply = await _finish(call, "Second question")
    assert reply == "Second answer."
    assert len(fake_gemini.requests) == 2
    turn = await _stored(server, "Second question")
    assert turn.backend == "gemini" and _spent(turn) == (0, 0, 0, 0, 0)


async def test_an_old_plush_that_never_sends_settled_is_answered_as_before(
    server: Any, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Good morning!")
    async with CompanionClient(f"127.0.0.1:{server.port}", "old-plush") as client:
        call = await client.converse(pb.TurnStart(want_audio=True), transcript="Good morning")
        events = [event async for event in call.events()]
    kinds = {e.WhichOneof("kind") for e in events}
    assert {"transcript", "text_delta", "audio", "done"} <= kinds
    assert "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta") == "Good morning!"
    turn = await _stored(server, "Good morning")
    assert turn.outcome == "answered" and _spent(turn) == (0, 0, 0, 0, 0)


async def test_settled_is_read_and_dropped_when_speculation_is_off(
    start_gemini_server: StartServer, fake_gemini: FakeGemini, tmp_path: Path
) -> None:
    server = await start_gemini_server(server=_server_section(tmp_path, max_speculations=0))
    fake_gemini.reply("Hi!")
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-off") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("Hi")
        reply = await _finish(call, "Hi")
    assert reply == "Hi!" and len(fake_gemini.requests) == 1
    assert _spent(await _stored(server, "Hi")) == (0, 0, 0, 0, 0)


async def test_a_local_speculation_gives_way_to_another_plushs_confirmed_turn(running_server: Any) -> None:
    """The local model answers one reply at a time: a speculation on it is cancelled the moment another plush's
    confirmed turn needs it, and the speculating plush's turn is answered afresh."""
    server = running_server
    local = server.companion.router.local_turns
    async with CompanionClient(f"127.0.0.1:{server.port}", "spec-local") as client:
        call = await client.start_turn(pb.TurnStart(want_audio=False))
        await call.send_settled("Tell me a story")
        for _ in range(200):
            if local.speculating:
                break
            await asyncio.sleep(0.02)
        assert local.speculating == 1
        other, done = await chat_reply(server.port, "Hello", device="other-plush")
        assert done.backend == "llama" and other
        assert local.speculating == 0
        reply = await _finish(call, "Tell me a story")
    assert reply
    turn = await _stored(server, "Tell me a story")
    assert turn.backend == "llama" and _spent(turn) == (1, 0, 1, 0, 0)


def test_the_dashboards_charts_count_speculations_adopted_and_wasted() -> None:
    start = 7200.0
    turns = [
        TurnRecord(id="a", conversation_id="c", device_id="p", source="device", user_text="x", started_at=start + 10,
                   speculations=1, speculations_adopted=1, speculation_gemini_requests=1),
        TurnRecord(id="b", conversation_id="c", device_id="p", source="device", user_text="y", started_at=start + 20,
                   speculations=2, speculations_wasted=2, speculation_gemini_requests=2, speculation_gemini_wasted=2),
        TurnRecord(id="c", conversation_id="c", device_id="t", source="chat", user_text="z", started_at=start + 30),
    ]  # fmt: skip
    spec = chart_data(turns, start, start + 100)["speculation"]
    assert (spec["adopted"], spec["wasted"], spec["gemini_wasted"]) == ([1], [2], [2])
    assert (spec["started"], spec["adopted_total"], spec["gemini_wasted_total"]) == (3, 1, 2)
    assert spec["gemini_wasted_per_turn"] == 1.0, "two wasted requests over the two spoken turns"
