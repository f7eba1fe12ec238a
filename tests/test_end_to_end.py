"""A whole turn over real gRPC on 127.0.0.1: WAV -> Whisper -> server -> llama -> Piper -> audio back, stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import ConfigFactory
from speech_signals import utterance, voiced

from plush.device.client import CompanionClient
from plush.device.runtime import Plush, TurnResult, WavSink
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, read_audio_file, read_wav, write_wav
from plush.voice_models.model_store import ModelStore
from plush.voice_models.stt import Transcriber


def speechlike_wav(path: Path, seconds: float = 1.5) -> Path:
    """A deterministic voiced-sounding signal (harmonics with a syllable envelope) as a WAV file."""
    write_wav(path, utterance(voiced(seconds)), WHISPER_RATE)
    return path


async def take_turn(port: int, config: Any, wav: Path, out: Path) -> tuple[TurnResult, Transcriber]:
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    async with CompanionClient(f"127.0.0.1:{port}", config.device.id) as client:
        await client.wait_ready(5)
        plush = Plush(config.device, client, transcriber if config.device.stt == "device" else None)
        result = await plush.take_turn(read_audio_file(wav), WavSink(out))
    return result, transcriber


def assert_streamed_in_order(result: TurnResult) -> None:
    kinds = result.event_kinds
    assert kinds[0] == "transcript"
    assert "text_delta" in kinds and "audio" in kinds
    assert kinds.index("text_delta") < kinds.index("audio")
    assert kinds[-1] == "done"
    assert kinds.count("done") == 1


async def test_spoken_turn_runs_through_device_stt_llama_and_piper(
    running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    wav = speechlike_wav(tmp_path / "in.wav")
    result, transcriber = await take_turn(running_server.port, config, wav, tmp_path / "out.wav")

    heard = transcriber.transcribe(pcm16_to_float(read_audio_file(wav))).text
    assert heard, "the tiny Whisper should produce some text"
    assert result.transcript == heard
    assert_streamed_in_order(result)
    assert result.reply.strip()
    assert (result.backend, result.backend_reason) == ("llama", "no_api_key")
    assert not result.errors

    pcm, rate = read_wav(tmp_path / "out.wav")
    assert rate == running_server.companion.speech.native_rate
    assert len(pcm) > rate  # at least half a second of reply speech (2 bytes a sample)

    stored = (await running_server.companion.store.list_turns(limit=5))[0]
    assert stored.user_text == heard
    assert stored.reply_text == result.reply.strip()
    assert stored.device_id == "test-plush"
    assert stored.backend == "llama"
    assert {"llm_first_token", "llm", "first_audio", "tts", "total"} <= set(stored.timings)
    assert all(ms >= 0 for ms in stored.timings.values())
    # The plush's own milestone (reported after the server's timings were sent): the reply written to the file.
    assert set(stored.timings) == {*result.timings, "first_audio_played"}
    assert stored.timings["first_audio_played"] >= stored.timings["first_audio"]


async def test_server_side_stt_transcribes_streamed_audio(
    running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(device={"id": "test-plush", "stt": "server"})
    wav = speechlike_wav(tmp_path / "in.wav", seconds=2.0)
    result, transcriber = await take_turn(running_server.port, config, wav, tmp_path / "out.wav")

    assert result.transcript == transcriber.transcribe(pcm16_to_float(read_audio_file(wav))).text
    assert_streamed_in_order(result)
    stored = (await running_server.companion.store.list_turns(limit=1))[0]
    assert "stt" in stored.timings


async def test_recent_turns_are_the_next_prompts_history(running_server: Any) -> None:
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "history-test") as client:
        for text in ("My name is Mina.", "I like rabbits."):
            replies = [e async for e in client.chat(text, conversation_id="kids-room")]
            assert replies[-1].done.backend == "llama"

    prompt = await running_server.companion.prompt_for("kids-room", "What do I like?", owner="device:history-test")
    examples = running_server.companion.persona.examples
    assert prompt.history[: len(examples)] == examples, "the persona's examples open every conversation"
    history = prompt.history[len(examples) :]
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0].text == "My name is Mina." and history[2].text == "I like rabbits."
    assert prompt.system == running_server.companion.persona.system_prompt
    other = await running_server.companion.prompt_for("another-room", "hi", owner="device:history-test")
    assert other.history == examples
