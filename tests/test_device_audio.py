"""The plush's own microphone and speaker code (Recorder, Player, SpeakerSink) on real sounddevice streams.

A headless PulseAudio gives PortAudio real, paced devices: what is fed into its `micfeed` sink is what the
default input hears, and what the default output plays can be recorded from `speaker.monitor`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from conftest import ConfigFactory, StartServer
from fakes.companion import ScriptedCompanion, broken_opus_chunk, opus_chunks, text
from fakes.pulse import HeadlessPulse, sine_pcm
from speech_signals import utterance, voiced
from test_end_to_end import speechlike_wav

from plush.device.audio_io import Player, Recorder
from plush.device.client import CompanionClient
from plush.device.listening import Listening
from plush.device.runtime import Plush, SpeakerSink, State
from plush.voice_models.audio import read_audio_file
from plush.voice_models.model_store import ModelStore
from plush.voice_models.stt import Transcriber


def dominant_frequency(pcm: bytes, rate: int) -> float:
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    signal -= signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(spectrum.argmax())])


def rms(pcm: bytes) -> float:
    samples: npt.NDArray[np.float64] = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def sounding_seconds(pcm: bytes, rate: int, *, frame_s: float = 0.02, floor: float = 500.0) -> float:
    """How long the speaker actually sounded: the 20 ms frames louder than `floor`, whatever the silence around."""
    frame = int(rate * frame_s) * 2
    frames = [pcm[i : i + frame] for i in range(0, len(pcm) - frame + 1, frame)]
    return sum(frame_s for chunk in frames if rms(chunk) > floor)


def test_recorder_captures_what_the_microphone_hears(pulse: HeadlessPulse) -> None:
    feeder = pulse.feed_mic(sine_pcm(440, 3.0), rate=16000)
    recorder = Recorder(sample_rate=16000)
    try:
        time.sleep(0.3)
        recorder.start()
        time.sleep(1.0)
        pcm = recorder.stop()
    finally:
        feeder.terminate()
        feeder.wait(timeout=5)
    # About one second of 16 kHz mono s16le; a loaded machine oversleeps, so only "not nothing, not everything".
    assert 0.7 * 32000 < len(pcm) < 2.7 * 32000
    assert rms(pcm) > 3000
    assert abs(dominant_frequency(pcm, 16000) - 440) < 5


def test_recorder_stops_at_the_maximum_length(pulse: HeadlessPulse) -> None:
    recorder = Recorder(sample_rate=16000, max_seconds=0.25)
    recorder.start()
    time.sleep(0.8)
    assert len(recorder.stop()) == 2 * 4000


def test_player_plays_what_it_is_given_as_it_arrives(pulse: HeadlessPulse) -> None:
    tone = sine_pcm(660, 1.0, 22050)
    with pulse.record_speaker(rate=16000) as speaker:
        player = Player(22050)
        for start in range(0, len(tone), 4410):  # 100 ms chunks, the server's chunk size
            player.write(tone[start : start + 4410])
        player.finish(timeout_s=10)
    heard = speaker.pcm
    assert rms(heard) > 3000
    assert abs(dominant_frequency(heard, 16000) - 660) < 5


def test_stop_now_silences_the_speaker_at_once(pulse: HeadlessPulse) -> None:
    player = Player(22050)
    player.write(sine_pcm(660, 5.0, 22050))
    time.sleep(0.3)
    started = time.perf_counter()
    player.stop_now()
    # It returns without playing out the 4.7 s still queued; the silence below is what the owner notices.
    assert time.perf_counter() - started < 4.0
    with pulse.record_speaker(rate=16000) as speaker:
        time.sleep(0.5)
    assert rms(speaker.pcm) < 100


async def test_a_spoken_turn_plays_the_reply_on_the_speaker(
    pulse: HeadlessPulse, running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    states: list[State] = []
    pcm = read_audio_file(speechlike_wav(tmp_path / "q.wav"))
    with pulse.record_speaker(rate=16000) as speaker:
        async with CompanionClient(f"127.0.0.1:{running_server.port}", "speaker-test") as client:
            plush = Plush(config.device, client, transcriber, on_state=states.append)
            result = await plush.take_turn(pcm, SpeakerSink())
        await asyncio.sleep(0.2)
    assert result.audio_chunks > 0 and not result.errors
    assert states == [State.THINKING, State.SPEAKING]
    played_s = len(speaker.pcm) / 32000
    assert rms(speaker.pcm) > 500, "the reply was not heard on the speaker"
    assert played_s > 0.5
    # The suite's voice speaks a 220 Hz tone: what the speaker played is what the server synthesized.
    assert abs(dominant_frequency(speaker.pcm, 16000) - 220) < 5
    # The plush said when its speaker started; the stored turn has that milestone after the first chunk sent.
    await running_server.companion.wait_stored()
    [stored] = await running_server.companion.store.list_turns(limit=1)
    assert stored.timings["first_audio"] < stored.timings["first_audio_played"] < stored.timings["first_audio"] + 2000


async def speaker_streams(pulse: HeadlessPulse, *, settle_s: float = 1.0) -> list[str]:
    """Playback streams still open on the speaker (PulseAudio's sink inputs), after `settle_s` for them to go."""
    speaker = next(
        line.split("\t")[0] for line in pulse.pactl("list", "short", "sinks").splitlines() if "speaker" in line
    )
    deadline = time.monotonic() + settle_s
    while True:
        inputs = [
            line for line in pulse.pactl("list", "short", "sink-inputs").splitlines() if line.split("\t")[1] == speaker
        ]
        if not inputs or time.monotonic() > deadline:
            return inputs
        await asyncio.sleep(0.05)


async def test_a_reply_that_fails_to_decode_is_played_as_far_as_it_came_then_error_then_idle(
    pulse: HeadlessPulse, make_config: ConfigFactory
) -> None:
    arrived = opus_chunks(sine_pcm(220, 0.6, 24000), 24000, 0.2)
    never_played = opus_chunks(sine_pcm(220, 3.0, 24000), 24000, 0.2)
    config = make_config(device={"id": "broken-reply", "stt": "server"})
    states: list[tuple[State, float]] = []
    calm = asyncio.Event()

    def on_state(state: State) -> None:
        states.append((state, time.monotonic()))
        if state is State.IDLE:
            calm.set()

    sink = SpeakerSink()
    with (
        ScriptedCompanion([text("Hello."), *arrived, broken_opus_chunk(24000), *never_played]) as peer,
        pulse.record_speaker(rate=16000) as speaker,
    ):
        async with CompanionClient(peer.address, config.device.id) as client:
            plush = Plush(config.device, client, None, on_state=on_state, error_shown_s=0.5)
            result = await plush._guarded_turn(utterance(voiced(0.5)), sink, Listening(None, 16000))
            assert not sink.open and await speaker_streams(pulse) == [], "the speaker was left open"
            await asyncio.wait_for(calm.wait(), 5)
    assert result.errors and "malformed Opus chunk" in result.errors[0]
    assert [state for state, _ in states] == [State.THINKING, State.SPEAKING, State.ERROR, State.IDLE]
    (_, error_at), (_, idle_at) = states[-2:]
    assert idle_at - error_at >= 0.45, "ERROR is shown for a moment, not replaced by IDLE at once"
    # Measured on what the speaker played, not on the clock: 0.6 s arrived before the broken chunk, 3 s after it.
    played_s = sounding_seconds(speaker.pcm, 16000)
    assert played_s > 0.3, "what arrived before the broken chunk was played"
    assert played_s < 2.0, f"{played_s:.1f} s were played: the 3 s after the broken chunk must not be"


async def test_a_server_that_dies_mid_reply_leaves_no_speaker_stream_open(
    pulse: HeadlessPulse, start_gemini_server: StartServer, fake_gemini: Any, make_config: ConfigFactory
) -> None:
    fake_gemini.reply(*[f"Sentence {i}. " for i in range(20)], chunk_delay=0.2)
    server = await start_gemini_server()
    config = make_config(device={"id": "mid-reply", "stt": "server"})
    states: list[State] = []
    speaking = asyncio.Event()

    def on_state(state: State) -> None:
        states.append(state)
        if state is State.SPEAKING:
            speaking.set()

    sink = SpeakerSink()
    async with CompanionClient(f"127.0.0.1:{server.port}", config.device.id) as client:
        plush = Plush(config.device, client, None, on_state=on_state)  # no offline phrase kept yet
        turn = asyncio.create_task(plush._guarded_turn(utterance(voiced(1.2)), sink, Listening(None, 16000)))
        await asyncio.wait_for(speaking.wait(), 30)
        await server.stop(grace=0)
        try:
            result = await asyncio.wait_for(turn, 10)
            assert result.errors and "Plush server" in result.errors[0]
            assert states[-1] is State.OFFLINE, "not an error: the plush waits for the server to come back"
            assert plush.offline
            assert not sink.open and await speaker_streams(pulse) == [], "the speaker was left open"
        finally:
            if plush._reconnecting is not None:
                plush._reconnecting.cancel()
                await asyncio.gather(plush._reconnecting, return_exceptions=True)


async def test_the_event_loop_keeps_its_pace_while_a_long_opus_reply_is_decoded_and_played(
    pulse: HeadlessPulse, make_config: ConfigFactory
) -> None:
    """One 20 s Opus chunk stands for a slower plush's work per chunk (a Pi decodes many times slower than this
    machine). Decoding, libopus' resampling (48 to 24 kHz), the volume and opening the speaker run off the event
    loop, so a probe that sleeps 10 ms is never late by anything near the 100 ms a button press would notice."""
    config = make_config(device={"id": "lag-probe", "stt": "server", "volume": 0.5})
    long_reply = opus_chunks(sine_pcm(220, 20.0, 24000), 24000, 30.0)  # all of it in one chunk
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    playing = asyncio.Event()

    async def probe() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lateness.append(loop.time() - before - 0.01)

    def on_text(kind: str, delta: str) -> None:
        if delta == " That was all.":
            playing.set()  # the long chunk before it has been decoded and handed to the speaker

    sink = SpeakerSink()
    with (
        ScriptedCompanion([text("Listen."), *long_reply, text(" That was all.")]) as peer,
        pulse.record_speaker(rate=16000) as speaker,
    ):
        async with CompanionClient(peer.address, config.device.id) as client:
            plush = Plush(config.device, client, None, on_text=on_text)
            prober = asyncio.create_task(probe())
            turn = asyncio.create_task(plush.take_turn(utterance(voiced(0.5)), sink))
            try:
                await asyncio.wait_for(playing.wait(), 20)
                await asyncio.sleep(0.5)
            finally:
                turn.cancel()  # the owner presses the button: no need to hear all 20 s
                await asyncio.gather(turn, return_exceptions=True)
                prober.cancel()
                await asyncio.gather(prober, return_exceptions=True)
    assert not sink.open
    peak = int(np.abs(np.frombuffer(speaker.pcm, dtype="<i2").astype(np.int32)).max())
    assert 6000 < peak < 11000, "the reply played, at half the loudness it was sent with (16384)"
    assert len(lateness) > 20
    # Decoding 20 s of Opus on the loop would block it for seconds; 0.3 s leaves room for a busy 2-core machine.
    assert max(lateness) < 0.3, f"the event loop was blocked for {max(lateness) * 1000:.0f} ms"
