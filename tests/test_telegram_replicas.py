"""The Telegram bot on replicas that share a Redis: one poller at a time, the poller's lease handed over when its
holder is killed, and each update pushed to a webhook handled once.

Real `plush server` processes (one database, one Redis from Debian's redis-server) poll the fake Bot API server
(fakes/telegram.py), which counts the getUpdates calls in flight together; the brain is the fake Gemini.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import tomli_w
from conftest import GEMINI_TEST_KEY, config_sections
from fakes.telegram import TOKEN, FakeTelegram
from test_server_faults import _start_process
from test_telegram import OWNER, REPLY, wait_for
from tiny_models import TinyModels

from plush.server.shared_state import SharedState
from plush.server.telegram.bridge import SLOW_DOWN, TelegramBridge
from plush.server.telegram.replicas import POLLER_LEASE_S, bot_id

LEASE_KEY = SharedState.key("lease", f"telegram-poller:{bot_id(TOKEN)}")


@pytest.fixture
def fake_telegram() -> Any:
    with FakeTelegram() as fake:
        yield fake


def _pid_of(holder: bytes | None) -> int | None:
    """The process id in a replica's name (`host-PID-hex`)."""
    return int(holder.decode().rsplit("-", 2)[1]) if holder else None


async def test_the_poller_lease_passes_to_the_other_replica_when_its_holder_is_killed(
    models: TinyModels, tmp_path: Path, fake_gemini: Any, fake_telegram: FakeTelegram, redis_url: str
) -> None:
    sections = config_sections(models, tmp_path)
    gemini = {"base_url": fake_gemini.base_url, "timeout_s": 5, "client_share": 1.0}
    sections["llm"] = {"backend": "auto", "gemini": gemini, "llama": sections["llm"]["llama"]}
    sections["telegram"] = {"allowed_users": [OWNER], "api_url": fake_telegram.base_url}
    sections["server"]["redis"] = redis_url
    config = tmp_path / "plush.toml"
    config.write_text(tomli_w.dumps(sections), encoding="utf-8")
    env = {
        **os.environ,
        "GEMINI_API_KEY": GEMINI_TEST_KEY,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "XDG_DATA_HOME": str(tmp_path / "data"),  # one machine: the replicas share the bot's inbox folder
    }
    replicas: dict[int, subprocess.Popen[str]] = {}
    async with aioredis.Redis.from_url(redis_url) as client:
        try:
            for _ in range(2):  # one after the other: one migrates the database first
                proc, _, _ = _start_process(config, env)
                replicas[proc.pid] = proc
            holder = await wait_for(lambda: client.get(LEASE_KEY), within_s=30)
            assert _pid_of(holder) in replicas, holder

            fake_telegram.send_text(OWNER, "Hello before.")
            await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY], within_s=60)
            polled = len(fake_telegram.calls_to("getUpdates"))
            # The other replica tries for the lease every quarter of it: watch it try a few times.
            await wait_for(lambda: len(fake_telegram.calls_to("getUpdates")) >= polled + 6, within_s=30)
            assert fake_telegram.most_polls_at_once == 1, "only the lease's holder polls"

            killed = replicas.pop(_pid_of(holder) or 0)
            killed.send_signal(signal.SIGKILL)
            await asyncio.to_thread(killed.wait, 10)
            killed_at = time.monotonic()
            fake_telegram.send_text(OWNER, "Hello after.")
            await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY, REPLY], within_s=POLLER_LEASE_S + 30)
            took = time.monotonic() - killed_at

            [survivor] = replicas.values()
            assert _pid_of(await client.get(LEASE_KEY)) == survivor.pid, "the survivor holds the lease now"
            assert took < POLLER_LEASE_S * 1.25 + 10, f"answered {took:.1f} s after the kill"
            assert fake_telegram.most_polls_at_once == 1, "never two pollers at once, the handover included"

            survivor.terminate()
            assert await asyncio.to_thread(survivor.wait, 20) == 0
            assert await client.get(LEASE_KEY) is None, "a clean stop lets go of the lease"
        finally:
            for proc in replicas.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)


async def test_a_poller_that_stops_hands_the_lease_over_and_the_other_replica_answers(
    start_gemini_server: Any, make_config: Any, fake_telegram: FakeTelegram, redis_url: str, tmp_path: Path
) -> None:
    server = await start_gemini_server()
    config = make_config(telegram={"allowed_users": [OWNER], "api_url": fake_telegram.base_url})
    shared = [await SharedState.connect(redis_url) for _ in range(2)]
    bridges = [
        TelegramBridge(server.companion, config.telegram, config.owners, state_dir=tmp_path / f"r{n}", shared=on)
        for n, on in enumerate(shared)
    ]
    pollers = [bridge.polling(fake_telegram.token, poll_timeout=1) for bridge in bridges]
    try:
        for poller in pollers:
            await poller.__aenter__()
        holder = await wait_for(lambda: shared[0].client.get(LEASE_KEY))
        first = 0 if holder.decode() == shared[0].replica else 1
        fake_telegram.send_text(OWNER, "Hello before.")
        await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY])

        await pollers[first].__aexit__(None, None, None)  # a clean stop: its lease is let go of
        stopped_at = time.monotonic()
        fake_telegram.send_text(OWNER, "Hello after.")
        await wait_for(lambda: fake_telegram.texts_to(OWNER) == [REPLY, REPLY])
        took = time.monotonic() - stopped_at
        assert (await shared[0].client.get(LEASE_KEY)).decode() == shared[1 - first].replica
    finally:
        for number, poller in enumerate(pollers):
            if number != first:
                await poller.__aexit__(None, None, None)
        for on in shared:
            await on.close()
    assert took < POLLER_LEASE_S / 4 + 3, f"answered {took:.1f} s after the stop"
    assert fake_telegram.most_polls_at_once == 1, "never two pollers at once"


def _webhook_bridge(
    server: Any, make_config: Any, fake: FakeTelegram, *, shared: SharedState, port: int, state: Path
) -> Any:
    settings = {
        "allowed_users": [OWNER],
        "api_url": fake.base_url,
        "webhook_url": "https://plush.example.org/telegram-hook",
        "webhook_port": port,
        "rate_limit": "2/minute",
    }
    config = make_config(telegram=settings)
    return TelegramBridge(server.companion, config.telegram, config.owners, state_dir=state, shared=shared)


@dataclass
class Hooked:
    """Two replicas' bots taking Telegram's pushes on a port each, with the secret Telegram was given."""

    bridges: list[TelegramBridge]
    ports: list[int]
    secret: str

    async def push(self, port: int, update_id: int, text: str) -> None:
        """Telegram pushing a message from the owner to the replica on `port`."""
        message: dict[str, Any] = {
            "message_id": update_id,
            "date": 1_700_000_000,
            "chat": {"id": OWNER, "type": "private"},
            "from": {"id": OWNER, "is_bot": False, "first_name": "Owner"},
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split(maxsplit=1)[0])}]
        async with httpx.AsyncClient() as http:
            pushed = await http.post(
                f"http://127.0.0.1:{port}/telegram-hook",
                json={"update_id": update_id, "message": message},
                headers={"X-Telegram-Bot-Api-Secret-Token": self.secret},
            )
        assert pushed.status_code == 200

    def idle(self) -> bool:
        """Every update pushed so far was handled to its end, on both replicas."""
        return not [path for bridge in self.bridges for path in bridge.inbox.folder.glob("*.json")]


@pytest.fixture
async def hooked(
    start_gemini_server: Any,
    make_config: Any,
    fake_telegram: FakeTelegram,
    redis_url: str,
    *,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
) -> AsyncIterator[Hooked]:
    server = await start_gemini_server()
    ports = [unused_tcp_port_factory(), unused_tcp_port_factory()]
    shared = [await SharedState.connect(redis_url) for _ in ports]
    bridges = [
        _webhook_bridge(server, make_config, fake_telegram, shared=on, port=port, state=tmp_path / f"r{number}")
        for number, (on, port) in enumerate(zip(shared, ports, strict=True))
    ]
    try:
        async with bridges[0].polling(fake_telegram.token), bridges[1].polling(fake_telegram.token):
            secrets = {call.params["secret_token"] for call in fake_telegram.calls_to("setWebhook")}
            assert len(secrets) == 1, "every replica gives Telegram the same secret"
            yield Hooked(bridges, ports, secrets.pop())
    finally:
        for client in shared:
            await client.close()


async def test_an_update_pushed_to_two_replicas_is_answered_once(hooked: Hooked, fake_telegram: FakeTelegram) -> None:
    first, second = hooked.ports
    for port in (first, second, first):  # Telegram pushed it again, and once more to the first replica
        await hooked.push(port, 7001, "/start")
    [greeting] = await wait_for(lambda: fake_telegram.texts_to(OWNER))
    await wait_for(hooked.idle)
    assert greeting.startswith("Hello! I'm")
    assert len(fake_telegram.texts_to(OWNER)) == 1, "answered once, by one replica"


async def test_a_chats_reply_choice_made_through_one_replica_holds_on_the_other(
    hooked: Hooked, fake_telegram: FakeTelegram
) -> None:
    first, second = hooked.ports
    await hooked.push(first, 7101, "/voice both")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 1)
    await hooked.push(second, 7102, "/status")
    await wait_for(lambda: len(fake_telegram.texts_to(OWNER)) == 2)
    # before: the second replica still answered with the mode it had read at its start
    assert "Replies here: both" in fake_telegram.texts_to(OWNER)[1]


async def test_a_users_rate_limit_counts_their_messages_on_every_replica(
    hooked: Hooked, fake_telegram: FakeTelegram
) -> None:
    first, second = hooked.ports
    for sent, port in enumerate((first, second, first), start=1):  # the limit is 2 a minute
        await hooked.push(port, 7200 + sent, f"Message {sent}.")
        await wait_for(partial(_texts_are, fake_telegram, sent), within_s=30)
    await wait_for(hooked.idle)
    # before: each replica counted on its own, and the third message was answered
    assert fake_telegram.texts_to(OWNER) == [REPLY, REPLY, SLOW_DOWN]


def _texts_are(fake_telegram: FakeTelegram, count: int) -> bool:
    return len(fake_telegram.texts_to(OWNER)) == count


async def test_a_replica_starting_behind_the_webhook_leaves_alone_what_another_is_answering(
    start_gemini_server: Any,
    make_config: Any,
    fake_telegram: FakeTelegram,
    fake_gemini: Any,
    redis_url: str,
    *,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
) -> None:
    server = await start_gemini_server()
    shared = [await SharedState.connect(redis_url) for _ in range(2)]
    ports = [unused_tcp_port_factory(), unused_tcp_port_factory()]
    # One machine: both replicas' bots keep their state in the same data folder.
    first, second = (
        _webhook_bridge(server, make_config, fake_telegram, shared=on, port=port, state=tmp_path)
        for on, port in zip(shared, ports, strict=True)
    )
    fake_gemini.reply("A slow answer.", delay=3.0)
    try:
        async with first.polling(fake_telegram.token):
            secret = fake_telegram.calls_to("setWebhook")[0].params["secret_token"]
            await Hooked([first], ports[:1], secret).push(ports[0], 7301, "Tell me something slowly.")
            await wait_for(lambda: fake_gemini.requests)  # the first replica is answering it
            async with second.polling(fake_telegram.token):
                await wait_for(lambda: fake_telegram.texts_to(OWNER), within_s=30)
                await wait_for(Hooked([first, second], ports, secret).idle)
    finally:
        for on in shared:
            await on.close()
    # before: the second replica answered it again from the inbox folder they share
    assert fake_telegram.texts_to(OWNER) == ["A slow answer."]
    assert len(fake_gemini.requests) == 1
