"""Helpers for the tests of replicas behind a balancer (tests/test_balancer.py, tests/test_cluster_script.py): the
nginx site and the pairing code as an owner gets them from the CLI, and one turn through a paired client."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import PLUSH_COMMAND

from plush.protos.plush.v1 import companion_pb2 as pb

CONVERSATION = "kid-room"


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


async def chat(client: Any, text: str) -> tuple[str, str]:
    """One text turn: the reply's text and its turn id."""
    events = [e async for e in client.chat(text, conversation_id=CONVERSATION)]
    reply = "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")
    assert events[-1].WhichOneof("kind") == "done", events[-1]
    return reply, events[-1].done.turn_id


def spoken_turn() -> pb.TurnStart:
    """What a plush sends first: the turn in its room's conversation, the reply wanted as speech."""
    return pb.TurnStart(conversation_id=CONVERSATION, want_audio=True)


async def converse(client: Any, text: str) -> tuple[str, str]:
    """One spoken turn with the plush's own transcript: the reply's text and its turn id."""
    call = await client.converse(spoken_turn(), transcript=text)
    events = [e async for e in call.events()]
    reply = "".join(e.text_delta.text for e in events if e.WhichOneof("kind") == "text_delta")
    assert events[-1].WhichOneof("kind") == "done", events[-1]
    return reply, events[-1].done.turn_id
