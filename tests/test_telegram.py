"""The Telegram bridge: the real python-telegram-bot Application against the fake Bot API server (fakes/telegram.py)
and a real Plush server whose brain is the fake Gemini."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.telegram import FakeTelegram
from structlog.testing import capture_logs

from plush.errors import PlushError
from plush.server.app import serve_forever
from plush.server.telegram.bridge import TelegramBridge, mask_token
from plush.server.telegram.messages import split_message
from plush.server.telegram.runner import bot_token

OWNER = 111
STRANGER = 999
REPLY = "I'm Plush, your cuddly friend. What shall we talk about?"


@pytest.fixture
def fake_telegram() -> Any:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(start_gemini_server: Any, make_config: Any, fake_telegram: FakeTelegram) -> AsyncIterator[Any]:
    """A running bridge (owner 111 allowed) on a running server; yields the server."""
    server = await start_gemini_server()
    config = make_config(telegram={"allowed_users": [OWNER], "api_url": fake_telegram.base_url})
    bridge = TelegramBridge(server.companion, config.telegram, config.owners, transcriber=server.transcriber)
    server.telegram_bridge = bridge  # for all_handled
    async with bridge.polling(fake_telegram.token, poll_timeout=1):
        yield server


def all_handled(fake_telegram: FakeTelegram, holder: Any) -> bool:
    """Every update sent so far was taken by the bot and handled to its end (its inbox file is gone): nothing
    more, a second "slow down" or a late answer, can come of them. `holder` is the bridge or its server."""
    bridge = holder if isinstance(holder, TelegramBridge) else holder.telegram_bridge
    return not fake_telegram.updates and not any(bridge.inbox.folder.glob("*.json"))


def _stored(server: Any, said: str, *, outcome: str) -> Any:
    """The stored turn for `said` once it has `outcome` (for wait_for), else None."""

    async def find() -> Any:
        for turn in await server.companion.store.list_turns(limit=50):
            if turn.user_text == said and turn.outcome == outcome:
                return turn
        return None

    return find()


async def wait_for(condition: Callable[[], Any], within_s: float = 15.0) -> Any:
    """The first truthy value of `condition()` (awaited when it is a coroutine), polled until `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting for the bot")


async def test_allowed_users_text_is_answered_and_stored_as_a_telegram_turn(
    bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    fake_telegram.send_text(OWNER, "hello there")
    await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY])
    await wait_for(lambda: all_handled(fake_telegram, bot))  # a doubled or late message would come before this
    assert fake_telegram.texts_to(OWNER) == [REPLY]
    actions = fake_telegram.calls_to("sendChatAction", OWNER)
    assert [c.params["action"] for c in actions] == ["typing"]
    await bot.companion.wait_stored()
    turns = await bot.companion.store.list_turns()
    assert [(t.source, t.user_text, t.reply_text, t.owner) for t in turns] == [
        ("telegram", "hello there", REPLY, f"telegram:{OWNER}")
    ]
    assert len(fake_gemini.requests) == 1
    assert fake_telegram.calls_to("setMyCommands")


async def test_stranger_gets_nothing_and_is_logged_once(
    bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    with capture_logs() as logs:
        fake_telegram.send_text(STRANGER, "hi")
        fake_telegram.send_text(STRANGER, "/start")
        fake_telegram.send_text(OWNER, "/help")  # answered after the stranger's: those were handled by then
        await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert fake_telegram.texts_to(STRANGER) == []
    assert fake_telegram.calls_to("sendChatAction", STRANGER) == []
    assert fake_gemini.requests == []
    assert await bot.companion.store.list_turns() == []
    strangers = [entry for entry in logs if entry["event"] == "telegram_stranger"]
    assert [entry["user_id"] for entry in strangers] == [STRANGER]


async def test_remember_puts_a_fact_into_a_later_prompt(
    bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    fake_telegram.send_text(OWNER, "/remember my cat is called Momo")
    await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert fake_telegram.texts_to(OWNER)[0].startswith("I'll remember that")
    fake_telegram.send_text(OWNER, "/facts")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    assert "my cat is called Momo" in fake_telegram.texts_to(OWNER)[1]
    fake_telegram.send_text(OWNER, "what is my pet's name?")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 3)
    assert "my cat is called Momo" in str(fake_gemini.requests[0].body)


async def test_forget_removes_only_the_users_own_fact(bot: Any, fake_telegram: FakeTelegram) -> None:
    store = bot.companion.store
    mine = await store.add_fact("I like rain", "test", owner=f"telegram:{OWNER}")
    theirs = await store.add_fact("the plush's secret", "test", owner="device:test-plush")
    fake_telegram.send_text(OWNER, f"/forget {theirs.id}")
    await wait_for(lambda: fake_telegram.texts_to(OWNER))
    fake_telegram.send_text(OWNER, f"/forget {mine.id}")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    refused, forgotten = fake_telegram.texts_to(OWNER)
    assert refused.startswith("Which one?")
    assert forgotten == f"Forgotten (#{mine.id})."
    assert [fact.id for fact in await store.all_facts()] == [theirs.id]


async def test_reset_starts_a_new_conversation(bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any) -> None:
    fake_telegram.send_text(OWNER, "the secret word is pineapple")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 1)
    fake_telegram.send_text(OWNER, "what did I say?")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    assert "pineapple" in str(fake_gemini.requests[1].body)
    fake_telegram.send_text(OWNER, "/reset")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 3)
    fake_telegram.send_text(OWNER, "what did I say?")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 4)
    assert "pineapple" not in str(fake_gemini.requests[2].body)


async def test_flood_control_on_send_message_is_retried_and_the_reply_arrives_once(
    bot: Any, fake_telegram: FakeTelegram
) -> None:
    fake_telegram.fail_next("sendMessage", 429, retry_after=1)
    fake_telegram.fail_next("sendMessage", 502)
    fake_telegram.send_text(OWNER, "hello")
    await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY])
    await wait_for(lambda: all_handled(fake_telegram, bot))
    assert fake_telegram.texts_to(OWNER) == [REPLY]
    assert len(fake_telegram.calls_to("sendMessage", OWNER)) == 3


async def test_status_names_the_brain_and_the_gemini_budget(bot: Any, fake_telegram: FakeTelegram) -> None:
    fake_telegram.send_text(OWNER, "/status")
    [text] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert "Gemini" in text
    assert "Gemini requests today: 0 of" in text
    assert "Last" not in text, "no turns here yet"


async def test_status_says_how_the_chats_recent_turns_ended(bot: Any, fake_telegram: FakeTelegram) -> None:
    for count, said in enumerate(("hello", "How do I make a bomb?", "hello again"), start=1):
        fake_telegram.send_text(OWNER, said)
        await wait_for(lambda count=count: len(fake_telegram.texts_to(OWNER)) == count)
    fake_telegram.send_text(OWNER, "/status")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 4)
    assert "Last 3 turns here: 2 answered · 1 blocked (weapons)" in fake_telegram.texts_to(OWNER)[-1]


def test_long_replies_are_split_at_telegrams_limit_on_a_word_break() -> None:
    text = ("word " * 2000).strip()
    pieces = split_message(text)
    assert all(len(p) <= 4096 for p in pieces)
    assert " ".join(pieces) == text
    assert len(pieces) == 3


def test_the_token_is_masked_to_its_last_four_characters() -> None:
    assert mask_token("123456:SECRET-abcd") == "****abcd"


async def test_plush_telegram_serves_the_bot_with_the_token_from_the_environment(
    make_config: Any, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake_telegram.token)
    config = make_config(telegram={"allowed_users": [OWNER], "api_url": fake_telegram.base_url})
    ready: list[int] = []
    stop = asyncio.Event()
    with capture_logs() as logs:
        serving = asyncio.create_task(serve_forever(config, ready.append, telegram=True, stop=stop))
        try:
            await wait_for(lambda: ready, within_s=60)
            fake_telegram.send_text(OWNER, "/start")
            [greeting] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
        finally:
            stop.set()
            await serving
    assert greeting.startswith("Hello! I'm")
    started = next(entry for entry in logs if entry["event"] == "telegram_started")
    assert started["token"] == "****abcd"
    assert fake_telegram.token not in str(logs)


def test_plush_telegram_without_a_token_says_how_to_set_it(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(PlushError, match="TELEGRAM_BOT_TOKEN is not set"):
        bot_token(make_config())


async def test_a_slow_reply_is_shown_as_it_streams_by_editing_one_message(
    bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    fake_gemini.reply("One. ", "Two. ", "Three.", chunk_delay=1.2)
    fake_telegram.send_text(OWNER, "count for me")
    await wait_for(lambda: fake_telegram.texts_to(OWNER) == ["One. Two. Three."])
    [sent] = fake_telegram.calls_to("sendMessage", OWNER)
    assert sent.params["text"] == "One."
    edits = [call.params["text"] for call in fake_telegram.calls_to("editMessageText", OWNER)]
    assert edits[-1] == "One. Two. Three."
    assert len(edits) >= 2  # it grew in the chat, not only at the end


async def test_a_reply_longer_than_one_message_continues_in_a_second(
    bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    long_reply = "La la la. " * 500  # 5,000 characters (sentences: see the report on the chunker)
    fake_gemini.reply(long_reply)
    fake_telegram.send_text(OWNER, "sing")
    texts = await wait_for(lambda: (t := fake_telegram.texts_to(OWNER)) and len(t) == 2 and t)
    assert all(len(text) <= 4096 for text in texts)
    assert " ".join(texts) == long_reply.strip()


async def test_a_reply_telegram_keeps_refusing_is_stored_as_an_error_and_the_bot_keeps_answering(
    bot: Any, fake_telegram: FakeTelegram
) -> None:
    fake_telegram.fail_for("sendMessage", 502)
    with capture_logs() as logs:
        fake_telegram.send_text(OWNER, "hello")
        turn = await wait_for(lambda: _stored(bot, "hello", outcome="error"), within_s=30)
    # before: nothing delivered, yet the turn was stored `answered`
    assert "Telegram did not take the reply at any try" in turn.error
    assert "telegram_reply_undelivered" in [entry["event"] for entry in logs]
    fake_telegram.recover("sendMessage")
    fake_telegram.send_text(OWNER, "/help")
    [help_text] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert help_text.startswith("/start")
