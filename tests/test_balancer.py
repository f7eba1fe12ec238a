"""Replicas behind a real gRPC load balancer: Debian's nginx, configured by `plush.server.balancer`, on 127.0.0.1.

A plush is paired through the balancer (the code names the balancer's address and the fingerprint of the
certificate it presents), talks through it over TLS, and is still answered after the replica that answered it
was killed with SIGKILL. The two replicas share one SQLite database here (SQLite's WAL allows several
processes), so the pairing and the stored turns are the same for both; the PostgreSQL store is tested elsewhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w
from conftest import PLUSH_COMMAND, config_sections, start_server_process
from test_dashboard_proxy import free_port, start_nginx
from tiny_models import TinyModels

from plush.config import load_config
from plush.device.paired_server import join, open_client
from plush.pairing import PairingCode
from plush.server.store import Store


@pytest.fixture
def run_nginx(tmp_path: Path) -> Iterator[Callable[[str, int], None]]:
    """Start nginx on a site; stops it after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield lambda site, port: started.append(start_nginx(tmp_path / "nginx", site, port))
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def balancer_site(config_file: Path, balancer: str, replicas: list[str]) -> str:
    """The site an owner gets from `plush cluster nginx --listen BALANCER -r REPLICA ...`."""
    replica_flags = [flag for address in replicas for flag in ("--replica", address)]
    done = subprocess.run(
        [*PLUSH_COMMAND, "cluster", "nginx", "--listen", balancer, *replica_flags, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "upstream plush_replicas" in done.stdout and "level=" not in done.stdout, "only the site is printed"
    return done.stdout


def pair_through(config_file: Path, balancer: str) -> str:
    """`plush pair add kid --address BALANCER` on the server side: the pairing code it prints."""
    done = subprocess.run(
        [*PLUSH_COMMAND, "pair", "add", "kid", "--address", balancer, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    found = re.search(r"plush pair join (\S+)", done.stdout)
    assert found, done.stdout
    assert "through a TLS balancer" in done.stdout, "tls = off is explained, not only warned about"
    return found.group(1)


async def chat(client: object, text: str) -> tuple[str, str]:
    """One text turn: the reply's text and its turn id."""
    events = [e async for e in client.chat(text, conversation_id="kid-room")]  # type: ignore[attr-defined]
    reply = "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")
    assert events[-1].WhichOneof("kind") == "done", events[-1]
    return reply, events[-1].done.turn_id


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
