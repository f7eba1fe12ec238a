"""Two `plush server` replicas on one PostgreSQL (Debian's server, started by the suite): what a plush tells one is
known to the other, and a plush paired once, while both run, is accepted by both without a restart.

Real processes, the real `plush pair add` and `plush memory` commands, the fake Gemini (it records every prompt,
so the test sees what the brain was given), the replicas' own files in the shared per-user data folder.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from balanced_replicas import pair_through
from conftest import GEMINI_TEST_KEY, PLUSH_COMMAND, config_sections, start_server_process
from fakes.gemini import FakeGemini
from tiny_models import TinyModels

from plush.config import load_config
from plush.device.client import AuthError, CompanionClient
from plush.pairing import PairingCode
from plush.server.paired_plushes import paired_plushes_of
from plush.server.store import Store


async def ask(address: str, code: PairingCode, text: str, conversation: str) -> str:
    """One text turn of the paired plush on the replica at `address`; the reply."""
    async with CompanionClient(address, code.name, token=code.token) as client:
        events = [e async for e in client.chat(text, conversation_id=conversation)]
    assert events[-1].WhichOneof("kind") == "done", events[-1]
    return "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")


async def test_a_fact_told_through_one_replica_is_recalled_through_the_other(
    models: TinyModels,
    tmp_path: Path,
    postgres_url: str,
    fake_gemini: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_TEST_KEY)  # the replicas inherit it
    sections: dict[str, Any] = config_sections(models, tmp_path)
    sections["server"] = {"port": 0, "database": postgres_url, "tls": "off"}  # TLS would end at a balancer
    sections["llm"] = {
        "backend": "auto",
        "gemini": {"base_url": fake_gemini.base_url, "timeout_s": 5, "client_share": 1.0},
        "llama": sections["llm"]["llama"],
    }
    config_file = tmp_path / "plush.toml"
    config_file.write_text(tomli_w.dumps(sections), encoding="utf-8")
    server = load_config(config_file, search=False).server
    async with paired_plushes_of(server) as paired:  # the replicas start guarded: tokens are checked
        await paired.add("kitchen")

    replicas = [start_server_process(config_file) for _ in range(2)]  # one after the other: one migrates first
    try:
        (_, address_a), (_, address_b) = replicas
        # Paired while both run, on neither's process: each must find it in the store.
        code = PairingCode.parse(await asyncio.to_thread(pair_through, config_file, address_a))
        fake_gemini.set_default_reply("I will remember that.")

        await ask(address_a, code, "Remember that my rabbit is called Snowball.", "kid-room")
        fake_gemini.set_default_reply("Your rabbit is called Snowball!")
        reply = await ask(address_b, code, "What is my rabbit called?", "kid-bedtime")

        assert reply == "Your rabbit is called Snowball!"
        told_b = fake_gemini.last_request
        prompt_b = (told_b.system_instruction or "") + " ".join(text for _, text in told_b.turns)
        assert "Snowball" in prompt_b, "replica B's brain was given what was told to replica A"
        assert "remember that my rabbit" not in prompt_b.lower(), "another conversation: it came as a fact"
        async with await Store.open(postgres_url) as store:
            facts = await store.list_facts("device:kid")
            turns = await store.list_turns(limit=10)
        assert len(facts) == 1 and "Snowball" in facts[0].text, facts
        listed = await asyncio.to_thread(
            subprocess.run,
            [*PLUSH_COMMAND, "memory", "facts", "--config", str(config_file)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert listed.returncode == 0 and "Snowball" in listed.stdout, "`plush memory` reads the shared database"
        assert {turn.device_id for turn in turns} == {"kid"} and len(turns) == 2, "both replicas store in one place"
    finally:
        for proc, _ in replicas:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


async def test_a_plush_paired_once_is_accepted_by_both_replicas_and_removed_from_both(
    models: TinyModels, tmp_path: Path, postgres_url: str
) -> None:
    sections: dict[str, Any] = config_sections(models, tmp_path)
    sections["server"] = {"port": 0, "database": postgres_url, "tls": "off"}
    config_file = tmp_path / "plush.toml"
    config_file.write_text(tomli_w.dumps(sections), encoding="utf-8")
    server = load_config(config_file, search=False).server
    async with paired_plushes_of(server) as paired:
        await paired.add("kitchen")

    replicas = [start_server_process(config_file) for _ in range(2)]
    try:
        addresses = [address for _, address in replicas]
        code = PairingCode.parse(await asyncio.to_thread(pair_through, config_file, addresses[0]))
        for address in addresses:
            assert await ask(address, code, "Hello!", "kid-room"), f"{address} answered the plush paired just now"

        async with paired_plushes_of(server) as paired:
            await paired.remove("kid")
        for address in addresses:
            with pytest.raises(AuthError, match=r"not accepted|pairing was removed"):
                async with asyncio.timeout(10):
                    while True:  # refused within the replicas' refresh (half a second)
                        await ask(address, code, "Still there?", "kid-room")
                        await asyncio.sleep(0.1)
    finally:
        for proc, _ in replicas:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


async def test_while_postgresql_is_away_known_plushes_pass_the_token_check_and_others_are_refused(
    tmp_path: Path,
) -> None:
    from postgres_server import PostgresServer

    from plush.server.auth import DeviceTokenInterceptor
    from plush.server.paired_plushes import PairedPlushes

    database = PostgresServer().start()  # its own: this test stops it
    try:
        store = await Store.open(database.create_database("plush_away"))
        paired = await PairedPlushes.open(store, tmp_path)
        token = await paired.add("nursery")
        guard = DeviceTokenInterceptor({}, paired)
        database.stop()

        assert await guard.recheck([("plush-device-id", "nursery"), ("authorization", f"Bearer {token}")]) is None
        refused = await guard.recheck([("plush-device-id", "kitchen"), ("authorization", "Bearer guess")])
        assert refused is not None and "not accepted" in refused, "refused, not a failed call"
        with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises for a gone server
            await paired.refresh()
        assert paired.accepts("nursery", token), "the copy in memory is kept"
        async with asyncio.timeout(10):
            await store.close()
    finally:
        database.stop()
