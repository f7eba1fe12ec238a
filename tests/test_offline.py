"""A plush whose server goes away: it says its offline phrase, shows "offline", and recovers by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import ConfigFactory
from speech_signals import utterance, voiced

from plush.device.client import CompanionClient
from plush.device.listening import Listening
from plush.device.offline import OfflinePhrases
from plush.device.runtime import Plush, State, WavSink
from plush.server.app import start_server
from plush.voice_models.audio import read_wav, scale_pcm16
from plush.voice_models.model_store import ModelStore
from plush.voice_models.stt import Transcriber


async def test_the_plush_says_its_offline_phrase_and_recovers_when_the_server_returns(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    server = await start_server(config)
    port = server.port
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    phrases = OfflinePhrases(tmp_path, "shelf-plush")
    states: list[State] = []
    back = asyncio.Event()

    def on_state(state: State) -> None:
        states.append(state)
        if state is State.IDLE and State.OFFLINE in states:
            back.set()

    async with CompanionClient(f"127.0.0.1:{port}", "shelf-plush") as client:
        assert await phrases.refresh(client), "the phrase is fetched while the server is reachable"
        kept, rate = read_wav(phrases.path)
        assert rate == server.companion.speech.native_rate and len(kept) > rate  # over half a second

        await server.stop(grace=0)  # the server goes away (a restart, a crash, Wi-Fi gone)
        plush = Plush(config.device, client, transcriber, phrases=phrases, on_state=on_state)
        said = WavSink(tmp_path / "said.wav")
        result = await plush._guarded_turn(utterance(voiced(1.2)), said, Listening(None, 16000))
        assert result.errors and "cannot reach the Plush server" in result.errors[0]
        assert states[-1] is State.OFFLINE and plush.offline
        assert read_wav(tmp_path / "said.wav")[0] == kept, "the plush said its offline phrase"

        restarted = await start_server(make_config(server={**config.server.model_dump(mode="json"), "port": port}))
        try:
            await asyncio.wait_for(back.wait(), timeout=30)
            assert not plush.offline
            again = await plush.take_turn(utterance(voiced(1.2)), WavSink(tmp_path / "again.wav"))
            assert again.reply and not again.errors
        finally:
            await restarted.stop(grace=0)
            for task in (plush._reconnecting, plush._refreshing):
                if task is not None:
                    await asyncio.gather(task, return_exceptions=True)


def test_without_a_kept_phrase_there_is_nothing_to_say(tmp_path: Path) -> None:
    assert OfflinePhrases(tmp_path, "new-plush").load() is None
    (tmp_path / "broken-offline.wav").write_bytes(b"not a wav")
    assert OfflinePhrases(tmp_path, "broken").load() is None


@pytest.mark.parametrize(("gain", "expected"), [(1.0, 1000), (0.5, 500), (2.0, 2000), (40.0, 32767), (0.0, 0)])
def test_volume_scales_and_clips(gain: float, expected: int) -> None:
    pcm = (1000).to_bytes(2, "little", signed=True) * 4
    out = scale_pcm16(pcm, gain)
    assert int.from_bytes(out[:2], "little", signed=True) == expected and len(out) == len(pcm)


async def test_the_phrases_rpc_answers_in_the_personas_voice(running_server: Any) -> None:
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "x") as client:
        reply = await client.phrases(output_sample_rate=16000)
    (phrase,) = reply.phrases
    assert phrase.name == "offline" and phrase.text == running_server.companion.persona.spec.offline_line
    assert phrase.audio.sample_rate == 16000 and len(phrase.audio.data) > 16000


async def test_a_phrase_that_cannot_be_kept_is_reported_and_the_old_one_stays(
    running_server: Any, tmp_path: Path
) -> None:
    phrases = OfflinePhrases(tmp_path, "full-card")
    phrases.path.write_bytes(b"the old phrase")
    phrases.path.with_suffix(".tmp").mkdir()  # the write cannot happen (as on a full or read-only card)
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "full-card") as client:
        assert not await phrases.refresh(client)
    assert phrases.path.read_bytes() == b"the old phrase"
