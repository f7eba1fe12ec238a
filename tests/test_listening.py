"""The whole press-speak-release loop on a real microphone (headless PulseAudio) and a real server.

The button is scripted (down, hold while the phrases play into the microphone, up, wait for the reply); the
recorder, the streaming STT, the gRPC stream and the server are the real ones. With server-side STT the turn's
stream opens at button down and the server transcribes while the owner is still speaking.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ConfigFactory, StartServer
from fakes.pulse import HeadlessPulse
from speech_signals import silence, utterance, voiced
from test_streaming_stt import THREE_PHRASES

from plush.device.audio_io import Recorder
from plush.device.client import CompanionClient
from plush.device.controls import ButtonEvent
from plush.device.runtime import Plush, State, WavSink
from plush.voice_models.model_store import ModelStore
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import Transcriber

HOLD_S = len(THREE_PHRASES) / 2 / 16000 + 0.4


class Script:
    """A button pressed once for `hold_s`, then released; quits once the plush is idle again."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.states: list[State] = []
        self._idle_again = asyncio.Event()

    def on_state(self, state: State) -> None:
        self.states.append(state)
        if state is State.IDLE and State.THINKING in self.states:
            self._idle_again.set()

    async def buttons(self) -> AsyncIterator[ButtonEvent]:
        yield ButtonEvent.DOWN
        await asyncio.sleep(self.hold_s)
        yield ButtonEvent.UP
        await asyncio.wait_for(self._idle_again.wait(), timeout=60)
        yield ButtonEvent.QUIT


async def press_and_speak(
    pulse: HeadlessPulse,
    port: int,
    config: Any,
    plush_stt: StreamingStt | None,
    out: Path,
    *,
    keep: list[Any] | None = None,
) -> tuple[Script, list[str]]:
    """One press: the three phrases spoken into the microphone while the button is held; `keep` gets the Plush."""
    script = Script(HOLD_S)
    heard: list[str] = []
    async with CompanionClient(f"127.0.0.1:{port}", config.device.id) as client:
        plush = Plush(
            config.device,
            client,
            plush_stt.transcriber if plush_stt else None,
            streaming=plush_stt,
            on_state=script.on_state,
            on_text=lambda kind, text: heard.append(text) if kind == "heard" else None,
        )
        if keep is not None:
            keep.append(plush)
        feeder = pulse.feed_mic(utterance(silence(0.2)) + THREE_PHRASES)
        try:
            await plush.run(script.buttons(), Recorder(16000), lambda: WavSink(out))
        finally:
            feeder.kill()
            feeder.wait(timeout=5)
    return script, heard


async def test_server_side_stt_hears_the_owner_while_the_button_is_held(
    pulse: HeadlessPulse, running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(device={"id": "server-stt", "stt": "server"})
    stt_threads: list[str] = []  # the server's streaming STT runs in a worker thread per utterance

    async def watch() -> None:
        while True:
            stt_threads.extend(t.name for t in threading.enumerate() if t.name == "plush-streaming-stt")
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        script, heard = await press_and_speak(pulse, running_server.port, config, None, tmp_path / "out.wav")
    finally:
        watcher.cancel()
    assert script.states[:4] == [State.IDLE, State.LISTENING, State.THINKING, State.SPEAKING]
    assert heard and heard[0], "the server heard the phrases"
    assert stt_threads, "the server transcribed while the audio was still arriving"
    stored = (await running_server.companion.store.list_turns(limit=1))[0]
    assert stored.user_text == heard[0] and stored.reply_text
    assert (tmp_path / "out.wav").stat().st_size > 10_000


async def test_device_side_streaming_stt_hears_the_owner_while_the_button_is_held(
    pulse: HeadlessPulse, running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    stt = StreamingStt.from_config(transcriber, config.stt)
    script, heard = await press_and_speak(pulse, running_server.port, config, stt, tmp_path / "out.wav")
    assert script.states[:4] == [State.IDLE, State.LISTENING, State.THINKING, State.SPEAKING]
    assert len(heard) == 1 and heard[0], "the plush heard the phrases through the microphone"
    stored = (await running_server.companion.store.list_turns(limit=1))[0]
    assert stored.user_text == heard[0] and stored.device_id == config.device.id
    assert (tmp_path / "out.wav").stat().st_size > 10_000


async def test_a_server_that_is_down_at_button_down_sends_the_plush_offline(make_config: ConfigFactory) -> None:
    config = make_config(device={"id": "server-stt", "stt": "server"})
    errors: list[str] = []
    states: list[State] = []
    async with CompanionClient("127.0.0.1:9", config.device.id) as client:
        plush = Plush(
            config.device,
            client,
            None,
            on_state=states.append,
            on_text=lambda kind, text: errors.append(text) if kind == "error" else None,
        )

        async def press() -> AsyncIterator[ButtonEvent]:
            yield ButtonEvent.DOWN
            yield ButtonEvent.UP
            yield ButtonEvent.QUIT

        await plush.run(press(), Recorder(16000), lambda: WavSink(Path("unused.wav")))
    assert states[-1] is State.OFFLINE and State.ERROR not in states, "a server that is away is not an error"
    assert errors and "cannot reach the Plush server" in errors[0]
    assert not plush.offline, "quitting stops the search for the server"


@pytest.fixture
async def slow_gemini_server(start_gemini_server: StartServer, fake_gemini: Any) -> Any:
    """A server whose Gemini first gives a long, slow answer (time to interrupt it), then a short one."""
    fake_gemini.reply(*[f"Sentence number {i}. " for i in range(12)], chunk_delay=0.3)
    fake_gemini.reply("Yes, I am listening.")
    return await start_gemini_server()


class TwoPresses:
    """The owner asks, interrupts the answer by pressing again, asks again, and waits for that answer."""

    def __init__(self, pulse: HeadlessPulse, out: Path) -> None:
        self.pulse, self.out = pulse, out
        self.states: list[State] = []
        self.feeders: list[Any] = []
        self._speaking = asyncio.Event()
        self._idle_after_second = asyncio.Event()

    def on_state(self, state: State) -> None:
        self.states.append(state)
        if state is State.SPEAKING:
            self._speaking.set()
        if state is State.IDLE and self.states.count(State.THINKING) == 2:
            self._idle_after_second.set()

    def sink(self) -> WavSink:
        return WavSink(self.out / f"reply{len(self.feeders)}.wav")

    async def buttons(self) -> AsyncIterator[ButtonEvent]:
        for _ in range(2):  # a phrase into the microphone each time the button is held
            self.feeders.append(self.pulse.feed_mic(utterance(silence(0.2), voiced(1.2), silence(0.6))))
            yield ButtonEvent.DOWN
            await asyncio.sleep(2.2)
            yield ButtonEvent.UP
            await asyncio.wait_for(self._speaking.wait(), timeout=30)
            self._speaking.clear()
        await asyncio.wait_for(self._idle_after_second.wait(), timeout=30)
        yield ButtonEvent.QUIT

    def close(self) -> None:
        for feeder in self.feeders:
            feeder.kill()
            feeder.wait(timeout=5)


async def test_pressing_the_button_while_the_plush_speaks_interrupts_it_and_listens_again(
    pulse: HeadlessPulse, slow_gemini_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    server = slow_gemini_server
    config = make_config(device={"id": "barge-in", "stt": "server"})
    owner = TwoPresses(pulse, tmp_path)
    try:
        async with CompanionClient(f"127.0.0.1:{server.port}", config.device.id) as client:
            plush = Plush(config.device, client, None, on_state=owner.on_state)
            await plush.run(owner.buttons(), Recorder(16000), owner.sink)
    finally:
        owner.close()

    turns = []
    for _ in range(100):  # the interrupted turn is stored when the server has wound it down
        turns = await server.companion.store.list_turns(limit=2)
        if len(turns) == 2:
            break
        await asyncio.sleep(0.05)
    second, first = turns
    assert first.interrupted and "Sentence number 11" not in first.reply_text
    assert not second.interrupted and second.reply_text == "Yes, I am listening."
    assert owner.states.count(State.LISTENING) == 2
    leftover = [t for t in asyncio.all_tasks() if "_produce" in repr(t.get_coro())]
    assert leftover == [], "no server task outlives the interrupted turn"


async def test_a_full_turn_with_the_paw_board_on_serial(
    pulse: HeadlessPulse, running_server: Any, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """The simulated paw board's button starts and ends the turn; its LEDs follow the plush's state."""
    from test_firmware import FIRMWARE, Board, make

    from plush.device.controls.serial_paw import SerialPaw

    assert make("sim").returncode == 0
    board = Board(FIRMWARE / "build" / "paw_sim", tmp_path / "ttyPAW")
    board.plug_in()
    config = make_config(device={"id": "paw-plush", "stt": "server"})
    paw = SerialPaw(str(board.link))
    await paw.start(timeout_s=5)
    spoken = asyncio.Event()

    def on_state(state: State) -> None:
        paw.show(state.value)
        if state is State.IDLE and spoken.is_set():
            asyncio.get_running_loop().call_later(0.3, paw._events.put_nowait, ButtonEvent.QUIT)
        if state is State.SPEAKING:
            spoken.set()

    async def press_while_speaking() -> None:
        feeder = pulse.feed_mic(utterance(silence(0.2), voiced(1.2), silence(0.6)))
        board.do("press")
        await asyncio.sleep(2.2)
        board.do("release")
        await asyncio.wait_for(spoken.wait(), 30)
        feeder.kill()
        feeder.wait(timeout=5)

    presser = asyncio.create_task(press_while_speaking())
    try:
        async with CompanionClient(f"127.0.0.1:{running_server.port}", config.device.id) as client:
            plush = Plush(config.device, client, None, on_state=on_state)
            await asyncio.wait_for(plush.run(paw.events(), Recorder(16000), lambda: WavSink(tmp_path / "r.wav")), 60)
        await presser
    finally:
        await paw.aclose()
        board.unplug()
    stored = (await running_server.companion.store.list_turns(limit=1))[0]
    assert stored.device_id == "paw-plush" and stored.user_text and stored.reply_text
    shown = [led for i, led in enumerate(board.leds) if i == 0 or board.leds[i - 1] != led]
    assert shown[-4:] == ["listening", "thinking", "speaking", "idle"], board.leds
