"""Bad input gets a clear error and the server keeps serving: protocol mistakes, bad audio, broken config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigFactory

from plush.config import load_config
from plush.device.client import CompanionClient, ServerError
from plush.device.runtime import Plush, WavSink
from plush.errors import AudioFormatError, ConfigError, ModelMissingError
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.protos.plush.v1 import companion_pb2_grpc as pb_grpc
from plush.server.contract_limits import MAX_INPUT_CHARS
from plush.voice_models.model_store import ModelStore
from plush.voice_models.stt import Transcriber

START = pb.TurnRequest(start=pb.TurnStart(want_audio=False))
END = pb.TurnRequest(end=pb.TurnEnd())


def audio(seconds: float, rate: int = 16000) -> pb.TurnRequest:
    return pb.TurnRequest(audio=pb.AudioChunk(data=b"\x01\x00" * int(seconds * rate), sample_rate=rate, channels=1))


async def converse(port: int, requests: list[pb.TurnRequest]) -> grpc.aio.AioRpcError:
    """Send `requests` on one Converse stream; return the RPC error the server answered with."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.CompanionStub(channel).Converse(iter(requests))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        return info.value


async def still_serves(port: int) -> None:
    async with CompanionClient(f"127.0.0.1:{port}", "after-bad-input") as client:
        events = [e async for e in client.chat("Are you still there?")]
    assert events[-1].WhichOneof("kind") == "done"
    assert "".join(e.text_delta.text for e in events).strip()


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "a turn starts with a TurnStart"),
        ([audio(0.5), END], "must start with TurnStart, got 'audio'"),
        ([START, audio(0.5, rate=4000), END], "unsupported sample rate 4000 Hz"),
        ([START, audio(31.0), END], "longer than the 30 s maximum"),
        ([START, END], "empty turn: no audio and no transcript"),
        ([START, pb.TurnRequest(start=pb.TurnStart()), END], "unexpected 'start' message inside a turn"),
        (
            [pb.TurnRequest(start=pb.TurnStart(language="x" * 262_144)), END],
            "TurnStart.language is 262144 characters; at most 16",
        ),
        (
            [START, pb.TurnRequest(transcript=pb.Transcript(text="hi", language="en" * 20)), END],
            "Transcript.language is 40 characters; at most 16",
        ),
        (
            [START, pb.TurnRequest(audio=pb.AudioChunk(data=b"\0\0", sample_rate=16000, encoding=99)), END],  # type: ignore[arg-type]
            "unknown audio encoding 99; send PCM_S16LE",
        ),
        (
            [START, pb.TurnRequest(transcript=pb.Transcript(text="word " * 20_000)), END],
            f"Transcript.text is 100000 characters; at most {MAX_INPUT_CHARS}",
        ),
    ],
    ids=[
        "empty-stream",
        "no-start",
        "sample-rate",
        "too-long",
        "empty-turn",
        "second-start",
        "long-language",
        "long-transcript-language",
        "unknown-audio-encoding",
        "long-transcript",
    ],
)
async def test_protocol_mistakes_get_invalid_argument_and_the_server_goes_on(
    running_server: Any, requests: list[pb.TurnRequest], message: str
) -> None:
    error = await converse(running_server.port, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")
    await still_serves(running_server.port)


async def test_empty_chat_message_is_refused(running_server: Any) -> None:
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "t") as client:
        with pytest.raises(ServerError, match="empty message"):
            [e async for e in client.chat("   ")]


async def test_empty_recording_is_a_clear_error_before_the_server_is_asked(
    running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "t") as client:
        plush = Plush(config.device, client, transcriber)
        with pytest.raises(AudioFormatError, match="empty recording"):
            await plush.take_turn(b"", WavSink(tmp_path / "out.wav"))
    assert await running_server.companion.store.list_turns() == []
    await still_serves(running_server.port)


async def test_unreachable_server_names_the_address() -> None:
    async with CompanionClient("127.0.0.1:9", "t") as client:
        with pytest.raises(ServerError, match=r"cannot reach the Plush server at 127.0.0.1:9"):
            await client.wait_ready(0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'fifty'\n", "'server.port': Input should be a valid integer"),
        ("[server]\nprot = 50051\n", "'server.prot': Extra inputs are not permitted"),
        ("[servre]\nport = 1\n", "unknown key 'servre'"),
        ("[stt]\nbeam_size = 0\n", "'stt.beam_size'"),
        ("[server\nport = 1\n", "not valid TOML"),
        ("gemini_api_key = 'AIza-secret'\n", "'gemini_api_key' is a secret"),
    ],
    ids=["wrong-type", "misspelt-key", "misspelt-section", "out-of-range", "not-toml", "secret-in-file"],
)
def test_malformed_config_names_the_bad_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plush.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_model_names_the_command_that_fetches_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelMissingError, match="run: plush models download whisper-base"):
        store.resolve("whisper-base", "stt")
    with pytest.raises(ModelMissingError, match="neither a file nor a known model name"):
        store.resolve(str(tmp_path / "nowhere.gguf"), "llm")


async def test_a_request_that_does_not_decode_gets_invalid_argument_and_the_server_goes_on(
    running_server: Any,
) -> None:
    corrupt = b"\xff\xff\xff"
    start = pb.TurnRequest(start=pb.TurnStart(want_audio=False)).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_server.port}") as channel:
        raw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
        converse = channel.stream_stream("/plush.v1.Companion/Converse", **raw)
        chat = channel.unary_stream("/plush.v1.Companion/Chat", **raw)
        for name, call in (
            ("first message", converse(iter([corrupt]))),
            ("after TurnStart", converse(iter([start, corrupt]))),
            ("chat with bad UTF-8", chat(b"\x0a\x02\xff\xfe")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value.details())
            assert "does not decode" in (info.value.details() or ""), name
    stored = await running_server.companion.store.list_turns()
    assert all(t.outcome == "refused" and "Traceback" not in t.error for t in stored), stored
    await still_serves(running_server.port)
