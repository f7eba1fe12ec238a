"""The Telegram bridge's behaviour past the first message: order, floods, shared memory with the plush, groups,
restarts, a start without network, and `plush telegram allow`. The real python-telegram-bot Application talks
to the fake Bot API server (fakes/telegram.py); the brain is a real Plush server with the fake Gemini."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import GEMINI_TEST_KEY, config_sections
from fakes.telegram import FakeTelegram
from structlog.testing import capture_logs
from test_server_faults import _start_process
from test_telegram import OWNER, REPLY, STRANGER, all_handled, wait_for
from tiny_models import TinyModels
from typer.testing import CliRunner

from plush.cli import app
from plush.config import load_config
from plush.device.client import CompanionClient, ServerError
from plush.server.store import Store
from plush.server.telegram.bridge import BUSY, SLOW_DOWN, TelegramBridge
from plush.server.telegram.chat_settings import ChatSettings
from plush.server.telegram.runner import plush_presence

GROUP = -100500


@pytest.fixture
def fake_telegram() -> Any:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def start_bot(
    start_gemini_server: Any, make_config: Any, fake_telegram: FakeTelegram, tmp_path: Path
) -> Callable[..., Any]:
    """Start a server and a bridge on it with `telegram` settings (owner 111 allowed); yields (server, bridge)."""

    async def start(**telegram: Any) -> tuple[Any, TelegramBridge]:
        settings = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url, **telegram}
        server = await start_gemini_server(telegram=settings)
        config = make_config(telegram=settings)
        bridge = TelegramBridge(
            server.companion,
            config.telegram,
            config.owners,
            transcriber=server.transcriber,
            presence=plush_presence(server.presence, config.dashboard.online_window_s),
            state_dir=tmp_path,
            in_flight=server.in_flight,
        )
        return server, bridge

    return start


@pytest.fixture
async def running(start_bot: Any, fake_telegram: FakeTelegram) -> AsyncIterator[Callable[..., Any]]:
    """`await running(**telegram)` starts a server and its bot, stopped at the end of the test."""
    stack: list[Any] = []

    async def run(**telegram: Any) -> Any:
        server, bridge = await start_bot(**telegram)
        server.telegram_bridge = bridge  # for all_handled
        polling = bridge.polling(fake_telegram.token, poll_timeout=1)
        await polling.__aenter__()
        stack.append(polling)
        return server

    yield run
    for polling in reversed(stack):
        await polling.__aexit__(None, None, None)


async def test_a_flood_gets_one_slow_down_and_no_extra_llm_calls(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    server = await running(rate_limit="2/minute")
    for n in range(6):
        fake_telegram.send_text(OWNER, f"message {n}")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 3)
    turns = await wait_for(lambda: _all_stored(server, 6))  # before: the 4 over the limit left no turn
    await wait_for(lambda: all_handled(fake_telegram, server))
    texts = fake_telegram.texts_to(OWNER)
    assert sorted(texts) == sorted([REPLY, REPLY, SLOW_DOWN]), "one slow down, no late answer"
    assert len(fake_gemini.requests) == 2
    assert sorted(t.outcome for t in turns) == ["answered"] * 2 + ["refused"] * 4
    assert all("rate limit" in t.error for t in turns if t.outcome == "refused")


async def _all_stored(server: Any, count: int) -> Any:
    """The stored turns once there are `count` of them (for wait_for), else None."""
    turns = await server.companion.store.list_turns(limit=100)
    return turns if len(turns) >= count else None


async def test_a_typing_indicator_telegram_refuses_never_costs_the_answer(
    running: Any, fake_telegram: FakeTelegram
) -> None:
    server = await running()
    fake_telegram.fail_for("sendChatAction", 502)
    fake_telegram.send_text(OWNER, "hello")
    # before: the update failed (telegram_update_failed): no LLM call, no reply, nothing stored
    assert await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=30) == [REPLY]
    [turn] = await wait_for(lambda: _all_stored(server, 1))
    assert turn.outcome == "answered"


async def test_edits_telegram_refuses_on_the_way_still_end_in_the_whole_reply(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    await running()
    fake_gemini.reply("Once upon a time, ", "there was a rabbit. ", "The end.", chunk_delay=0.6)
    for _ in range(4):  # every try of the edit on the way
        fake_telegram.fail_next("editMessageText", 502)
    fake_telegram.send_text(OWNER, "a story please")
    whole = ["Once upon a time, there was a rabbit. The end."]
    assert await wait_for(lambda: fake_telegram.texts_to(OWNER) == whole and whole, within_s=30) == whole
    assert len(fake_telegram.calls_to("editMessageText", OWNER)) == 5, "4 refused on the way, then the last"


async def test_messages_sent_while_a_reply_is_slow_are_answered_in_order(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    server = await running()
    fake_gemini.reply("First answer.", delay=1.0)
    fake_gemini.reply("Second answer.")
    fake_gemini.reply("Third answer.")
    for text in ("one", "two", "three"):
        fake_telegram.send_text(OWNER, text)
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 3)
    assert fake_telegram.texts_to(OWNER) == ["First answer.", "Second answer.", "Third answer."]
    await server.companion.wait_stored()
    turns = sorted(await server.companion.store.list_turns(), key=lambda t: t.started_at)
    assert [(t.user_text, t.reply_text) for t in turns] == [
        ("one", "First answer."),
        ("two", "Second answer."),
        ("three", "Third answer."),
    ]


async def test_a_fact_told_to_the_plush_is_known_in_its_owners_telegram_chat(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    server = await running(conversations={str(OWNER): "livingroom"})
    async with CompanionClient(f"127.0.0.1:{server.port}", "livingroom") as plush:
        async for _ in plush.chat("remember that my cat is called Momo"):
            pass
    fake_telegram.send_text(OWNER, "what is my cat called?")
    await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert "my cat is called Momo" in str(fake_gemini.requests[-1].body)
    await server.companion.wait_stored()
    [turn] = [t for t in await server.companion.store.list_turns() if t.source == "telegram"]
    assert (turn.conversation_id, turn.owner, turn.device_id) == (
        "device:livingroom",
        "device:livingroom",
        f"telegram:{OWNER}",
    )


async def test_group_chats_are_ignored_unless_allowed_and_then_are_a_conversation_of_their_own(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    with capture_logs() as logs:
        await running()
        fake_telegram.send_text(OWNER, "hello everyone", chat_id=GROUP, chat_type="group", title="family")
        fake_telegram.send_text(OWNER, "/help")
        await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert fake_telegram.texts_to(GROUP) == []
    assert fake_gemini.requests == []
    assert [e["chat_id"] for e in logs if e["event"] == "telegram_group_ignored"] == [GROUP]


async def test_an_allowed_group_is_answered_to_allowed_users_only(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    server = await running(allow_groups=True)
    fake_telegram.send_text(STRANGER, "me too!", chat_id=GROUP, chat_type="group", title="family")
    fake_telegram.send_text(OWNER, "hello everyone", chat_id=GROUP, chat_type="group", title="family")
    await wait_for(lambda: fake_telegram.texts_to(GROUP))
    await wait_for(lambda: all_handled(fake_telegram, server))  # the stranger's message too
    assert fake_telegram.texts_to(GROUP) == [REPLY]
    await server.companion.wait_stored()
    [turn] = await server.companion.store.list_turns()
    assert (turn.conversation_id, turn.user_text) == (f"telegram-group:{GROUP}", "hello everyone")


async def test_a_restarted_bot_does_not_answer_old_messages_again(
    start_bot: Any, fake_telegram: FakeTelegram, fake_gemini: Any
) -> None:
    _, first = await start_bot()
    async with first.polling(fake_telegram.token, poll_timeout=1):
        fake_telegram.send_text(OWNER, "hello")
        await wait_for(lambda: fake_telegram.texts_to(OWNER))
    _, second = await start_bot()
    async with second.polling(fake_telegram.token, poll_timeout=1):
        fake_telegram.send_text(OWNER, "hello again")
        await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
        await wait_for(lambda: all_handled(fake_telegram, second))
    assert fake_telegram.texts_to(OWNER) == [REPLY, REPLY]
    assert len(fake_gemini.requests) == 2


async def test_a_bot_started_without_network_keeps_trying_says_so_once_and_then_answers(
    start_bot: Any, fake_telegram: FakeTelegram
) -> None:
    _, bridge = await start_bot()
    fake_telegram.refuse_connections()
    stop, started = asyncio.Event(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(bridge.serve(fake_telegram.token, stop, started=started))
        await asyncio.sleep(3.5)  # a few retries (1 s, 2 s ...)
        assert not started.is_set()
        fake_telegram.accept_connections()
        await asyncio.wait_for(started.wait(), 15)
        fake_telegram.send_text(OWNER, "/start")
        await wait_for(lambda: fake_telegram.texts_to(OWNER))
        stop.set()
        await task
    events = [e["event"] for e in logs]
    assert events.count("telegram_unreachable") == 1
    assert "telegram_reachable_again" in events


async def test_status_says_which_brain_answers_now_and_why(running: Any, fake_telegram: FakeTelegram) -> None:
    server = await running(conversations={str(OWNER): "livingroom"})
    server.companion.router.budget.pause(30)  # as after Gemini's 429
    fake_telegram.send_text(OWNER, "/status")
    [text] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert "Brain now: llama (Gemini asked us to wait a little)" in text
    assert "Plush livingroom: not seen since the server started" in text
    async with CompanionClient(f"127.0.0.1:{server.port}", "livingroom") as plush:
        await plush.phrases()  # what a plush asks for when it starts
    fake_telegram.send_text(OWNER, "/status")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    assert "Plush livingroom: online" in fake_telegram.texts_to(OWNER)[1]


@pytest.mark.parametrize("retry_delay", ["60s", "1s", None])
async def test_status_after_geminis_429_names_the_brain_the_turns_get(
    running: Any, fake_telegram: FakeTelegram, fake_gemini: Any, retry_delay: str | None
) -> None:
    await running()
    fake_gemini.fail(429, retry_delay=retry_delay)
    fake_telegram.send_text(OWNER, "hello")
    await wait_for(lambda: fake_telegram.texts_to(OWNER))
    fake_telegram.send_text(OWNER, "/status")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    status = fake_telegram.texts_to(OWNER)[1]
    assert "Brain now: llama (Gemini asked us to wait a little)" in status, status


async def test_status_names_the_local_brain_while_this_minutes_gemini_budget_is_spent(
    start_gemini_server: Any, make_config: Any, fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    settings = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url}
    server = await start_gemini_server(telegram=settings, gemini={"requests_per_minute": 1})
    config = make_config(telegram=settings)
    bridge = TelegramBridge(server.companion, config.telegram, config.owners, state_dir=tmp_path)
    async with bridge.polling(fake_telegram.token, poll_timeout=1):
        fake_telegram.send_text(OWNER, "hello")
        await wait_for(lambda: fake_telegram.texts_to(OWNER))
        fake_telegram.send_text(OWNER, "/status")
        await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    # before: "Brain now: gemini (Gemini answers)", while the next turn went to the local brain
    assert "Brain now: llama (this minute's Gemini budget is used up" in fake_telegram.texts_to(OWNER)[1]


async def test_voice_choice_is_kept_for_the_chat(running: Any, fake_telegram: FakeTelegram, tmp_path: Path) -> None:
    await running()
    fake_telegram.send_text(OWNER, "/voice both")
    fake_telegram.send_text(OWNER, "/voice loud")
    texts = await wait_for(lambda: (t := fake_telegram.texts_to(OWNER)) and len(t) == 2 and t)
    assert texts[0] == "From now on I answer here with text and a voice note."
    assert texts[1].startswith("I answer this chat with: both.")
    assert ChatSettings(tmp_path / "telegram" / "chats.json").mode(OWNER) == "both"


def test_plush_telegram_allow_adds_the_user_and_keeps_the_files_comments(tmp_path: Path) -> None:
    config = tmp_path / "plush.toml"
    config.write_text("# my plush\n[telegram]\n# the family\nallowed_users = [5]\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["telegram", "allow", "42", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "42 may talk" in result.output
    text = config.read_text(encoding="utf-8")
    assert "# my plush" in text and "# the family" in text
    assert "allowed_users = [5, 42]" in text
    result = runner.invoke(app, ["telegram", "disallow", "5", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "allowed_users = [42]" in config.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("before", "after_allow"),
    [
        ("", "allowed_users = [42]"),
        ("[telegram]\nenabled = true\n", "allowed_users = [42]"),
        ("[server]\nport = 50051\n", "allowed_users = [42]"),
        ("[telegram]\nallowed_users = []\n", "allowed_users = [42]"),
        ("telegram.allowed_users = [7]\n", "allowed_users = [7, 42]"),
    ],
    ids=["empty-file", "table-without-the-key", "no-table", "empty-list", "dotted-key"],
)
def test_plush_telegram_allow_and_disallow_work_on_any_valid_config(
    tmp_path: Path, before: str, after_allow: str
) -> None:
    config = tmp_path / "plush.toml"
    config.write_text(before, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["telegram", "allow", "42", "--config", str(config)])
    assert result.exit_code == 0, result.output  # before: TypeError 'NoneType' object is not iterable
    assert after_allow in config.read_text(encoding="utf-8")
    assert list(load_config(config).telegram.allowed_users) == sorted({42, *((7,) if "7" in before else ())})
    result = runner.invoke(app, ["telegram", "disallow", "42", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert 42 not in load_config(config).telegram.allowed_users


async def test_with_a_webhook_url_telegram_pushes_updates_and_a_wrong_secret_is_refused(
    start_bot: Any, fake_telegram: FakeTelegram, unused_tcp_port: int
) -> None:
    import httpx

    _, bridge = await start_bot(webhook_url="https://plush.example.org/telegram-hook", webhook_port=unused_tcp_port)
    update = {
        "update_id": 7001,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": OWNER, "type": "private"},
            "from": {"id": OWNER, "is_bot": False, "first_name": "Owner"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }
    async with bridge.polling(fake_telegram.token):
        [registered] = fake_telegram.calls_to("setWebhook")
        assert registered.params["url"] == "https://plush.example.org/telegram-hook"
        secret = registered.params["secret_token"]
        assert fake_telegram.calls_to("getUpdates") == []  # pushed, not polled
        hook = f"http://127.0.0.1:{unused_tcp_port}/telegram-hook"
        async with httpx.AsyncClient() as client:
            forged = await client.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            pushed = await client.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})
        assert forged.status_code == 403
        assert pushed.status_code == 200
        [greeting] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
    assert greeting.startswith("Hello! I'm")


async def test_a_message_whose_reply_sigkill_cut_is_answered_once_after_the_restart(
    models: TinyModels, tmp_path: Path, fake_gemini: Any, fake_telegram: FakeTelegram
) -> None:
    fake_gemini.reply(*[f"Sentence number {i}. " for i in range(12)], chunk_delay=0.5)
    sections = config_sections(models, tmp_path)
    gemini = {"base_url": fake_gemini.base_url, "timeout_s": 5, "client_share": 1.0}
    sections["llm"] = {"backend": "auto", "gemini": gemini, "llama": sections["llm"]["llama"]}
    sections["telegram"] = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url}
    config = tmp_path / "plush.toml"
    config.write_text(tomli_w.dumps(sections), encoding="utf-8")
    env = {
        **os.environ,
        "GEMINI_API_KEY": GEMINI_TEST_KEY,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    first, _, output = _start_process(config, env)
    try:
        fake_telegram.send_text(OWNER, "Tell me a long story.")
        await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=60)  # the reply has begun
        await wait_for(lambda: not fake_telegram.updates)  # and Telegram has forgotten the message
    finally:
        first.kill()
        await asyncio.to_thread(first.wait, 20)
    fake_gemini.reply("Here is the whole story.")
    second, _, output = _start_process(config, env)
    try:
        await wait_for(lambda: "Here is the whole story." in fake_telegram.texts_to(OWNER), within_s=60)
        async with await Store.open(tmp_path / "plush.db") as store:
            turns = await wait_for(store.list_turns, within_s=15)
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 20)
    # before: the message was never answered after the restart
    assert [(t.user_text, t.reply_text, t.outcome) for t in turns] == [
        ("Tell me a long story.", "Here is the whole story.", "answered")
    ], "".join(output)
    assert "telegram_replaying" in "".join(output)
    assert len(fake_gemini.requests) == 2
    assert list((tmp_path / "data" / "plush" / "telegram" / "inbox").glob("*.json")) == [], "handled, let go"


async def test_telegram_turns_take_their_place_among_the_servers_turns_in_flight(
    start_gemini_server: Any, make_config: Any, fake_telegram: FakeTelegram, fake_gemini: Any, tmp_path: Path
) -> None:
    settings = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url}
    server_section = {"port": 0, "database": str(tmp_path / "plush.db"), "max_turns_in_flight": 1}
    server = await start_gemini_server(telegram=settings, server=server_section)
    config = make_config(telegram=settings)
    bridge = TelegramBridge(
        server.companion, config.telegram, config.owners, state_dir=tmp_path, in_flight=server.in_flight
    )
    async with bridge.polling(fake_telegram.token, poll_timeout=1):
        fake_gemini.reply("A slow answer.", delay=2.0)
        fake_telegram.send_text(OWNER, "one")
        await wait_for(lambda: server.in_flight.count == 1)  # before: the gauge never saw a Telegram turn
        async with CompanionClient(f"127.0.0.1:{server.port}", "plush-a") as plush:
            with pytest.raises(ServerError, match=r"RESOURCE_EXHAUSTED.*max_turns_in_flight"):
                [e async for e in plush.chat("Hello?")]
        await wait_for(lambda: fake_telegram.texts_to(OWNER) == ["A slow answer."])

        fake_gemini.reply("The plush's slow answer.", delay=2.0)
        async with CompanionClient(f"127.0.0.1:{server.port}", "plush-a") as plush:
            talking = asyncio.create_task(_drain(plush.chat("Tell me something.")))
            await wait_for(lambda: server.in_flight.count == 1)
            fake_telegram.send_text(OWNER, "two")
            await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
            await talking
    assert fake_telegram.texts_to(OWNER)[1] == BUSY
    refused = [t for t in await server.companion.store.list_turns() if t.user_text == "two"]
    assert [(t.outcome, "max_turns_in_flight" in t.error) for t in refused] == [("refused", True)]


async def _drain(events: Any) -> list[Any]:
    return [e async for e in events]
