"""Replicas behind a real gRPC load balancer: Debian's nginx, configured by `plush.server.balancer`, on 127.0.0.1.

A plush is paired through the balancer (the code names the balancer's address and the fingerprint of the
certificate it presents), talks through it over TLS, and is still answered after the replica that answered it
was killed with SIGKILL. A replica killed in the middle of a reply leaves that turn stored as interrupted (with
what was said), and the plush's next turn is answered by the other. The two replicas share one SQLite database
here (SQLite's WAL allows several processes), so the pairing and the stored turns are the same for both; the
PostgreSQL store is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import tomli_w
from balanced_replicas import balancer_site, chat, converse, pair_through, spoken_turn
from conftest import GEMINI_TEST_KEY, config_sections, start_server_process
from fakes.gemini import DEFAULT_REPLY, FakeGemini
from test_dashboard_proxy import start_nginx
from tiny_models import TinyModels

from plush.config import load_config
from plush.device.client import ServerError
from plush.device.paired_server import join, open_client
from plush.pairing import PairingCode
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.scratch_engines import free_port
from plush.server.store import Store, TurnRecord


@pytest.fixture
def run_nginx(tmp_path: Path) -> Iterator[Callable[[str, int], None]]:
    """Start nginx on a site; stops it after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield lambda site, port: started.append(start_nginx(tmp_path / "nginx", site, port))
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_plush_paired_through_the_balancer_is_answered_after_its_replica_is_killed(
    models: TinyModels, tmp_path: Path, run_nginx: Callable[[str, int], None]
) -> None:
    sections = config_sections(models, tmp_path)
    sections["server"]["tls"] = "off"  # TLS ends at the balancer
    config_file = tmp_path / "plush.toml"
    config_file.write_text(tomli_w.dumps(sections), encoding="utf-8")
    balancer = f"127.0.0.1:{free_port()}"

    code = pair_through(config_file, balancer)

    replicas = [start_server_process(config_file) for _ in range(2)]  # one after the other: one migrates first
    try:
        server = load_config(config_file, search=False).server
        run_nginx(
            balancer_site(config_file, balancer, [address for _, address in replicas]), int(balancer.split(":")[1])
        )

        paired = join(PairingCode.parse(code), path=tmp_path / "paired_server.json")
        device_config = load_config(search=False, device={"id": "unused"})
        async with open_client(device_config, paired) as client:
            first, first_id = await chat(client, "Hello there!")
            assert first, "the first turn was answered through the balancer"
            for proc, _ in replicas[:1]:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            after = [await chat(client, f"Still there? {i}") for i in range(3)]
        assert all(reply for reply, _ in after), after

        async with await Store.open(server.database_path()) as store:
            stored = {turn.id: turn for turn in await store.list_turns(limit=10)}
        assert {first_id, *(turn_id for _, turn_id in after)} <= set(stored), "every answered turn was stored"
        assert {stored[turn_id].device_id for turn_id in stored} == {"kid"}
    finally:
        for proc, _ in replicas:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


STORY = ("Once upon a time, ", "a bunny lived in a burrow. ", *("It hopped and hopped. " for _ in range(60)))
"""A reply that takes half a minute at the pace below: long enough to kill its replica in the middle of it."""


async def test_a_replica_killed_mid_reply_leaves_the_turn_stored_and_another_answers_the_next(
    models: TinyModels, tmp_path: Path, run_nginx: Callable[[str, int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_TEST_KEY)
    with FakeGemini() as gemini_a, FakeGemini() as gemini_b:  # one each, so the fake that is asked names the replica
        config_files = _replica_configs(models, tmp_path, [gemini_a, gemini_b])
        balancer = f"127.0.0.1:{free_port()}"
        code = pair_through(config_files[0], balancer)
        replicas = [start_server_process(config_file) for config_file in config_files]
        try:
            run_nginx(
                balancer_site(config_files[0], balancer, [address for _, address in replicas]),
                int(balancer.split(":")[1]),
            )
            for gemini in (gemini_a, gemini_b):
                gemini.reply(*STORY, chunk_delay=0.5)
            paired = join(PairingCode.parse(code), path=tmp_path / "paired_server.json")
            async with open_client(load_config(search=False, device={"id": "unused"}), paired) as client:
                call = await client.converse(spoken_turn(), transcript="Tell me a long story")
                events = aiter(call.events())
                turn_id = await _first_words(events)
                serving = 0 if gemini_a.requests else 1
                other_gemini = (gemini_a, gemini_b)[1 - serving]
                other_gemini.clear()  # the next turn is answered at once, with the fake's default reply
                database = load_config(config_files[0], search=False).server.database_path()
                async with await Store.open(database) as store:
                    under_way = await _stored_with_reply(store, turn_id)
                    assert (under_way.outcome, under_way.ending) == ("interrupted", "replica_lost")

                    killed, _ = replicas[serving]
                    killed.send_signal(signal.SIGKILL)
                    killed.wait(timeout=10)
                    with pytest.raises(ServerError):
                        async with asyncio.timeout(20):
                            async for _ in events:
                                pass

                    reply, next_id = await converse(client, "Are you still there?")
                    assert reply == "".join(DEFAULT_REPLY), "the other replica answered, with its Gemini"
                    [asked] = other_gemini.requests
                    assert not any("long story" in text for _, text in asked.turns), "no prompt has the lost turn"

                    lost = await store.get_turn(turn_id)
                    answered = await store.get_turn(next_id)
                    kept = await store.list_turns(limit=10)
        finally:
            for proc, _ in replicas:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=20)
    assert lost is not None and (lost.outcome, lost.ending) == ("interrupted", "replica_lost")
    assert (lost.source, lost.device_id, lost.user_text) == ("device", "kid", "Tell me a long story")
    assert lost.reply_text.startswith("Once upon a time,"), "what was said before the replica died is kept"
    assert answered is not None and (answered.outcome, answered.backend) == ("answered", "gemini")
    assert [turn.id for turn in kept] == [next_id, turn_id], "each turn is in the log once"


def _replica_configs(models: TinyModels, tmp_path: Path, geminis: list[FakeGemini]) -> list[Path]:
    """A config file per replica: the same database, certificate and pairings, each its own Gemini."""
    config_files = []
    for n, gemini in enumerate(geminis):
        sections = config_sections(models, tmp_path)
        sections["server"]["tls"] = "off"
        llama = sections["llm"]["llama"]
        sections["llm"] = {"backend": "auto", "llama": llama, "gemini": {"base_url": gemini.base_url}}
        config_files.append(tmp_path / f"plush-{n}.toml")
        config_files[-1].write_text(tomli_w.dumps(sections), encoding="utf-8")
    return config_files


async def _first_words(events: AsyncIterator[pb.TurnEvent]) -> str:
    """Read a reply until its first words: the turn's id."""
    async with asyncio.timeout(20):
        while (event := await anext(events)).WhichOneof("kind") != "text_delta":
            pass
    return event.turn_id


async def _stored_with_reply(store: Store, turn_id: str) -> TurnRecord:
    """The turn as the store holds it once some of its reply is in it (the plush has heard that much)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (turn := await store.get_turn(turn_id)) is not None and turn.reply_text:
            return turn
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn_id} is not in the store with its reply so far: {turn}")
