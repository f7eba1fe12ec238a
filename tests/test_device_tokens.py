"""Device tokens: with PLUSH_DEVICE_TOKENS set, only plushes showing their own token may talk to the server."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from conftest import ConfigFactory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plush.config import load_config
from plush.device.client import AuthError, CompanionClient
from plush.errors import ConfigError
from plush.server.app import start_server


@pytest.fixture
async def guarded_server(make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PLUSH_DEVICE_TOKENS", "kitchen=s3cret-kitchen, nursery=s3cret-nursery")
    running = await start_server(make_config())
    yield running
    await running.stop(grace=0)


async def chat(port: int, device: str, token: str | None) -> str:
    async with CompanionClient(f"127.0.0.1:{port}", device, token=token) as client:
        return "".join([e.text_delta.text async for e in client.chat("Hello!")])


async def test_a_plush_with_its_token_is_answered(guarded_server: Any) -> None:
    assert await chat(guarded_server.port, "nursery", "s3cret-nursery")


@pytest.mark.parametrize(
    ("device", "token", "message"),
    [
        ("nursery", None, "needs a device token: set PLUSH_DEVICE_TOKEN on the plush 'nursery'"),
        ("nursery", "s3cret-kitchen", "the token of plush 'nursery' is not accepted"),  # another plush's token
        ("stranger", "s3cret-nursery", "the token of plush 'stranger' is not accepted"),
    ],
)
async def test_a_plush_without_its_token_is_refused_clearly(
    guarded_server: Any, device: str, token: str | None, message: str
) -> None:
    with pytest.raises(AuthError, match=message):
        await chat(guarded_server.port, device, token)
    stored = await guarded_server.companion.store.list_turns()
    assert stored == [], "a refused call never reaches the brain"


async def test_health_checks_need_no_token(guarded_server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_token_lists_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUSH_DEVICE_TOKENS", "kitchen:s3cret")
    with pytest.raises(ConfigError, match="PLUSH_DEVICE_TOKENS must look like"):
        load_config(search=False).allowed_devices()


def test_tokens_are_masked_in_config_show(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import subprocess
    import sys

    env = {"PLUSH_DEVICE_TOKEN": "abcdefgh1234", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-m", "plush", "config", "show"], capture_output=True, text=True, env=env, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "abcdefgh" not in shown.stdout and 'device_token = "****1234"' in shown.stdout


async def test_a_plush_with_a_token_cannot_reach_into_another_conversation(guarded_server: Any) -> None:
    async with CompanionClient(f"127.0.0.1:{guarded_server.port}", "nursery", token="s3cret-nursery") as client:
        [e async for e in client.chat("Hi!", conversation_id="device:kitchen")]
    (turn,) = await guarded_server.companion.store.list_turns()
    assert turn.conversation_id == "chat:nursery/device:kitchen"


async def test_two_device_ids_in_one_call_are_refused(guarded_server: Any) -> None:
    from plush.device.client import describe_rpc_error
    from plush.protos.plush.v1 import companion_pb2 as pb
    from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc

    metadata = (
        ("plush-device-id", "nursery"),
        ("plush-device-id", "kitchen"),
        ("authorization", "Bearer s3cret-kitchen"),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        stub = pb_grpc.CompanionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [e async for e in stub.Chat(pb.ChatRequest(text="hi"), metadata=metadata)]
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(describe_rpc_error(refused.value, "x"), AuthError)
