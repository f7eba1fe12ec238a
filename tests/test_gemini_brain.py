"""Gemini as the brain: the real google-genai client against a fake Gemini on 127.0.0.1, llama as the fallback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import GEMINI_TEST_KEY, StartServer, chat_reply
from fakes.gemini import FakeGemini

from plush.device.client import CompanionClient
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.store.records import REPLICA_LOST


@pytest.fixture
async def gemini_server(start_gemini_server: StartServer) -> Any:
    return await start_gemini_server()


async def chat(port: int, text: str, conversation: str = "room") -> tuple[str, pb.TurnDone]:
    reply, done = await chat_reply(port, text, conversation, device="gemini-test")
    return reply, done


async def test_gemini_gets_the_persona_as_system_instruction_and_the_recent_history(
    gemini_server: Any, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Hello Mina! ", "Rabbits are fluffy.")
    fake_gemini.reply("You like rabbits!")

    first, done = await chat(gemini_server.port, "Hi, I'm Mina and I like rabbits.")
    assert first == "Hello Mina! Rabbits are fluffy."
    assert (done.backend, done.backend_reason) == ("gemini", "primary")
    second, _ = await chat(gemini_server.port, "What do I like?")
    assert second == "You like rabbits!"

    requests = fake_gemini.requests
    assert len(requests) == 2
    last = requests[-1]
    assert last.streaming and last.model == "gemini-flash-latest"
    assert last.api_key == GEMINI_TEST_KEY
    assert last.system_instruction == gemini_server.companion.persona.system_prompt
    persona = gemini_server.companion.persona
    examples = [("model" if m.role == "assistant" else "user", m.text) for m in persona.examples]
    assert examples, "the built-in persona's examples open every conversation"
    assert last.turns == [
        *examples,
        ("user", "Hi, I'm Mina and I like rabbits."),
        ("model", "Hello Mina! Rabbits are fluffy."),
        ("user", "What do I like?"),
    ]
    safety = {s["category"]: s["threshold"] for s in last.body["safetySettings"]}
    assert safety["HARM_CATEGORY_SEXUALLY_EXPLICIT"] == "BLOCK_LOW_AND_ABOVE"

    stored = await gemini_server.companion.store.list_turns(limit=1)
    assert stored[0].backend == "gemini" and stored[0].reply_text == "You like rabbits!"


async def test_gemini_failure_before_the_first_token_is_answered_by_llama(
    gemini_server: Any, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail(500)
    reply, done = await chat(gemini_server.port, "Tell me a story.")
    assert reply.strip()
    assert (done.backend, done.backend_reason) == ("llama", "gemini_error")
    stored = (await gemini_server.companion.store.list_turns(limit=1))[0]
    assert "Gemini answered 500" in stored.error


async def test_quota_exhausted_turn_falls_back_to_llama(gemini_server: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.fail(429, retry_delay="53s")
    reply, done = await chat(gemini_server.port, "Sing me a song.")
    assert reply.strip()
    assert done.backend == "llama"


async def test_stream_cut_mid_answer_keeps_what_was_said(gemini_server: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.cut_stream("Once upon a time, ")
    reply, done = await chat(gemini_server.port, "Tell me a story.")
    fallback = gemini_server.companion.persona.spec.fallback_line
    assert reply == f"Once upon a time, … {fallback}", "a cut-off sentence trails off into the persona's line"
    assert (done.backend, done.backend_reason) == ("gemini", "error_mid_stream")
    stored = (await gemini_server.companion.store.list_turns(limit=1))[0]
    assert stored.outcome == "error" and "after 18 characters of the reply" in stored.error, stored.error
    fake_gemini.cut_stream("The end. ")
    reply, _ = await chat(gemini_server.port, "Tell me another.")
    assert reply == "The end. ", "a whole sentence needs no excuse"


@pytest.mark.parametrize("prompt_blocked", [False, True], ids=["reply", "prompt"])
async def test_a_gemini_safety_block_is_stored_blocked_with_its_category_and_answered_kindly(
    gemini_server: Any, fake_gemini: FakeGemini, prompt_blocked: bool
) -> None:
    fake_gemini.block_safety(prompt_blocked=prompt_blocked)
    reply, done = await chat(gemini_server.port, "Something not for children.")
    persona = gemini_server.companion.persona
    assert reply and reply != persona.spec.fallback_line, "the calm line, not the 'fuzzy head' excuse"
    assert (done.backend, done.backend_reason) == ("gemini", "gemini_safety"), "the local brain was not asked"
    stored = (await gemini_server.companion.store.list_turns(limit=1))[0]
    assert (stored.outcome, stored.safety) == ("blocked", "gemini:HARM_CATEGORY_HARASSMENT")
    assert stored.reply_text == reply and not stored.error


async def test_a_stream_that_ends_without_a_finish_reason_is_an_error_with_what_was_received(
    gemini_server: Any, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("Once upon a time, ", "a bunny", finish_reason=None)
    reply, done = await chat(gemini_server.port, "Tell me a story.")
    fallback = gemini_server.companion.persona.spec.fallback_line
    assert reply == f"Once upon a time, a bunny… {fallback}", "it trails off into the persona's line"
    assert done.backend_reason == "error_mid_stream"
    stored = (await gemini_server.companion.store.list_turns(limit=1))[0]
    assert stored.outcome == "error" and "without a finish reason, after 25 characters" in stored.error


async def test_a_reply_of_only_whitespace_is_answered_in_persona(gemini_server: Any, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply(" ", "\n")
    reply, done = await chat(gemini_server.port, "Hello?")
    assert reply.strip() == gemini_server.companion.persona.spec.fallback_line
    assert done.backend_reason == "gemini_empty_reply"


async def test_a_newer_turn_from_the_same_plush_mid_reply_is_stored_as_what_stopped_the_older_one(
    gemini_server: Any, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply("One. ", "Two. ", "Three. ", chunk_delay=30)
    fake_gemini.reply("Hello again!")
    async with CompanionClient(f"127.0.0.1:{gemini_server.port}", "kitchen") as client:
        older = await client.converse(pb.TurnStart(want_audio=False), transcript="Count for me.")
        async for event in older.events():
            if event.WhichOneof("kind") == "text_delta":
                break
        newer = await client.converse(pb.TurnStart(want_audio=False), transcript="Hello?")
        said = "".join([e.text_delta.text async for e in newer.events() if e.WhichOneof("kind") == "text_delta"])
    assert said == "Hello again!"
    await gemini_server.companion.wait_stored()
    turns = {t.user_text: t for t in await gemini_server.companion.store.list_turns(limit=5)}
    assert (turns["Count for me."].outcome, turns["Count for me."].ending) == ("interrupted", "superseded")
    assert turns["Hello?"].outcome == "answered" and turns["Hello?"].ending == ""


async def test_cancel_mid_reply_stops_the_turn_and_keeps_what_was_said(
    gemini_server: Any, fake_gemini: FakeGemini
) -> None:
    # The rest of the reply would come 30 s later (the fake's wait ends when it stops): however slow the machine,
    # the cancel comes first, so "Four" cannot be in the stored turn by timing luck (it once failed under load).
    fake_gemini.reply("One. ", "Two. ", "Three. ", "Four. ", chunk_delay=30)
    async with CompanionClient(f"127.0.0.1:{gemini_server.port}", "barge-in") as client:
        call = await client.converse(pb.TurnStart(want_audio=True), transcript="Count for me.")
        async for event in call.events():
            if event.WhichOneof("kind") == "text_delta":
                break
        await call.cancel()

    store = gemini_server.companion.store
    for _ in range(100):  # the turn's row says replica_lost while it is under way, until its end replaces it
        if (turns := await store.list_turns(limit=1)) and turns[0].ending != REPLICA_LOST:
            break
        await asyncio.sleep(0.05)
    assert turns, "the interrupted turn must be stored"
    assert turns[0].interrupted and turns[0].ending == "barge_in", "the turn log says what stopped it"
    assert turns[0].reply_text.startswith("One.")
    assert "Four" not in turns[0].reply_text
    leftover = [t for t in asyncio.all_tasks() if "_produce" in repr(t.get_coro())]
    assert leftover == [], "no turn task may outlive a cancelled turn"
    reply, done = await chat(gemini_server.port, "Are you there?")  # the next turn works
    assert reply and done.backend == "gemini"
