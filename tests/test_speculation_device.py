"""The plush's side of speculation: its streaming STT says when the phrase so far has settled (and when the owner
speaks on), and a plush with STT on board sends it as Settled while the button is held.

Real Silero VAD and the suite's Whisper; the whole loop on a headless PulseAudio microphone against a real server
whose Gemini is the fake (the same wire protocol as the real one).
"""

from __future__ import annotations

import threading
from pathlib import Path

from conftest import ConfigFactory, StartServer
from fakes.companion import ScriptedCompanion, opus_chunks, text
from fakes.gemini import FakeGemini
from fakes.pulse import HeadlessPulse, sine_pcm
from speech_signals import silence, utterance, voiced
from test_listening import press_and_speak
from test_streaming_stt import feed_like_a_microphone, stt, vad, wait_for  # noqa: F401 - fixtures

from plush.device.runtime import Plush, State
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.voice_models.audio import WHISPER_RATE
from plush.voice_models.model_store import ModelStore
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import Transcriber


def test_the_settled_text_so_far_is_told_and_speaking_on_clears_it(stt: StreamingStt) -> None:  # noqa: F811
    reports: list[tuple[str, str]] = []
    told = threading.Event()

    def on_settled(text: str, language: str) -> None:
        reports.append((text, language))
        told.set()

    pcm = utterance(voiced(1.0), silence(0.3), voiced(0.8, 150), silence(0.3))
    pause_end = int((1.0 + 0.3) * WHISPER_RATE) * 2
    spoke_on_end = int((1.0 + 0.3 + 0.5) * WHISPER_RATE) * 2
    stream = stt.begin()
    stream.on_settled = on_settled
    feed_like_a_microphone(stream.feed, pcm[:pause_end])
    wait_for(lambda: len(reports) == 1)
    first, language = reports[0]
    assert first and language == "en", "the first phrase settled while the button was held"
    feed_like_a_microphone(stream.feed, pcm[pause_end:spoke_on_end])
    wait_for(lambda: len(reports) == 2)
    assert reports[1][0] == "", "speaking on is told too: what was settled no longer stands"
    feed_like_a_microphone(stream.feed, pcm[spoke_on_end:])
    result = stream.finish()
    assert result.text
    assert all(text != "" for text, _ in reports[2:]), "after the last pause only settled texts follow"


async def test_a_plush_with_stt_on_board_sends_the_settled_text_while_the_button_is_held(
    pulse: HeadlessPulse,
    start_gemini_server: StartServer,
    fake_gemini: FakeGemini,
    make_config: ConfigFactory,
    tmp_path: Path,
) -> None:
    # Three phrases, each settling before the next: a speculation each (the last one's is the one to adopt).
    server = await start_gemini_server(server={"port": 0, "database": str(tmp_path / "p.db"), "max_speculations": 3})
    fake_gemini.set_default_reply("Hello from Gemini.")
    config = make_config(device={"id": "speculating-plush", "speculate": True})
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    plush_stt = StreamingStt.from_config(transcriber, config.stt)
    script, heard = await press_and_speak(pulse, server.port, config, plush_stt, tmp_path / "out.wav")
    assert State.SPEAKING in script.states and heard and heard[0]
    await server.companion.wait_stored()
    turn = (await server.companion.store.list_turns(limit=1))[0]
    assert turn.user_text == heard[0] and turn.reply_text == "Hello from Gemini."
    assert turn.speculations >= 1, "the plush told the server what it heard before the release"
    assert turn.speculations == turn.speculations_adopted + turn.speculations_wasted
    assert len(fake_gemini.requests) == turn.speculation_gemini_wasted + 1, "one request answered, the rest wasted"


async def test_a_plush_that_speculates_is_still_answered_by_a_server_older_than_settled(
    pulse: HeadlessPulse, make_config: ConfigFactory, tmp_path: Path
) -> None:
    reply = [text("Hello."), *opus_chunks(sine_pcm(220, 0.6, 24000), 24000, 0.2), pb.TurnEvent(done=pb.TurnDone())]
    config = make_config(device={"id": "new-plush", "speculate": True})
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    plush_stt = StreamingStt.from_config(transcriber, config.stt)
    plushes: list[Plush] = []
    with ScriptedCompanion(reply, before_settled=True) as old_server:
        script, _ = await press_and_speak(pulse, old_server.port, config, plush_stt, tmp_path / "out.wav", keep=plushes)
    assert old_server.refused_settled == 1, "the plush sent Settled once and the old server refused that turn"
    assert old_server.converse_calls == 2, "the turn was asked again the old way, at once"
    assert State.SPEAKING in script.states and State.ERROR not in script.states, "the owner heard the reply"
    assert plushes[0].settled_refused, "and that server is not sent Settled again"
