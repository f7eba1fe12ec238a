"""What operators and tools see of a running server: health checking, reflection, graceful stop."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from conftest import ConfigFactory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from plush.errors import PlushError
from plush.server.app import SERVICE_NAME, start_server


async def test_health_reports_serving_for_the_companion_service(running_server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_companion_service(running_server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert SERVICE_NAME == "plush.v1.Companion"


async def test_a_port_in_use_is_a_clear_error(running_server: Any, make_config: ConfigFactory) -> None:
    config = make_config(server={"port": running_server.port, "database": str(running_server.companion.store.path)})
    with pytest.raises(PlushError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
        await start_server(config)
