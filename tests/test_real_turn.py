"""One whole turn on the real weights, as a user hears it: a spoken question in, a spoken answer out.

The question is spoken by the real Piper voice (joe) and played to the plush as a recording; the plush
transcribes it with the real Whisper base, the server answers with a real instruct brain from the registry
(Qwen2.5-Coder 0.5B Instruct, greedy, in its worker process) and speaks the answer with joe over real gRPC on
127.0.0.1. What was said must be what was heard, and the answer's audio, heard by Whisper again, must be the
answer's text: the offline default really talks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plush.config import load_config
from plush.device.client import CompanionClient
from plush.device.runtime import Plush, WavSink
from plush.server.app import start_server
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, read_wav, resample_pcm16
from plush.voice_models.speech_scoring import character_error_rate, word_error_rate
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer

pytestmark = pytest.mark.real_weights

QUESTION = "What do you like to eat for breakfast?"


async def test_spoken_question_is_heard_answered_and_the_answer_is_heard_back(
    real_whisper_base: Path, real_joe_voice: Path, real_qwen_small: Path, tmp_path: Path
) -> None:
    voice = Synthesizer(real_joe_voice)
    question = resample_pcm16(voice.synthesize(QUESTION), voice.sample_rate, WHISPER_RATE)
    config = load_config(
        search=False,
        stt={"model": str(real_whisper_base)},
        tts={"voice": str(real_joe_voice)},
        llm={
            "backend": "llama",
            "llama": {"model": str(real_qwen_small), "n_ctx": 2048, "max_tokens": 48, "temperature": 0.0},
        },
        server={"port": 0, "database": str(tmp_path / "plush.db"), "stt_on_server": False},
        device={"id": "real-plush"},
    )
    running: Any = await start_server(config)
    try:
        transcriber = Transcriber.from_config(config.stt, _store(config))
        async with CompanionClient(f"127.0.0.1:{running.port}", config.device.id) as client:
            await client.wait_ready(10)
            plush = Plush(config.device, client, transcriber)
            result = await plush.take_turn(question, WavSink(tmp_path / "reply.wav"))
        stored = (await running.companion.store.list_turns(limit=1))[0]
    finally:
        await running.stop(grace=0.5)

    assert word_error_rate(QUESTION, result.transcript) == 0.0, result.transcript
    assert (result.backend, result.backend_reason) == ("llama", "no_api_key")
    assert not result.errors
    reply = result.reply.strip()
    assert reply and "Owner:" not in reply and "[INST]" not in reply, reply
    assert stored.user_text == result.transcript and stored.reply_text == reply

    pcm, rate = read_wav(tmp_path / "reply.wav")
    heard = Transcriber(real_whisper_base, options=SttOptions(language="en")).transcribe(
        pcm16_to_float(resample_pcm16(pcm, rate, WHISPER_RATE))
    )
    # Characters, not words: a short reply ("Eggs! I don't like eggs.") heard as "Ed's, I don't like kegs." is
    # 40 % of its words but a fifth of its letters; what matters is that the audio says the reply's text. The
    # instruct brain answers in whole sentences, so one misheard word cannot decide the test.
    assert character_error_rate(reply, heard.text) <= 0.3, f"said {reply!r}, heard {heard.text!r}"


def _store(config: Any) -> Any:
    from plush.voice_models.model_store import ModelStore

    return ModelStore.from_config(config.models)
