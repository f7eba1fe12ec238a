"""Run the plush from the command line: one turn from a file, or the interactive space-bar loop.

This is the device's entry point: it loads the speech model, connects to the server, wires the button,
microphone and speaker to the turn loop, and shows what the plush is doing on the terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from plush.config import DeviceConfig, PlushConfig, cache_home
from plush.device.audio_io import Recorder
from plush.device.client import UnreachableError
from plush.device.controls import Controls, KeyboardButton
from plush.device.offline import OfflinePhrases
from plush.device.paired_server import open_client
from plush.device.runtime import Plush, SpeakerSink, State, TurnResult, WavSink, transcribes_on_device
from plush.errors import PlushError
from plush.voice_models.audio import read_audio_file
from plush.voice_models.model_store import ModelStore
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import Transcriber

STATE_LOOK = {
    State.IDLE: "[dim]idle - hold or tap space to talk, q quits[/]",
    State.LISTENING: "[bold green]listening...[/]",
    State.THINKING: "[bold yellow]thinking...[/]",
    State.SPEAKING: "[bold cyan]speaking[/]",
    State.OFFLINE: "[red]offline - looking for the server...[/]",
    State.ERROR: "[bold red]error[/]",
}


def _terminal_ui(console: Console) -> tuple[Callable[[State], None], Callable[[str, str], None]]:
    """Status lines and the conversation on the terminal; the reply streams on its own line after "plush:"."""
    replying = False

    def end_reply() -> None:
        nonlocal replying
        if replying:
            console.print()
            replying = False

    def on_state(state: State) -> None:
        if state is State.SPEAKING:
            return  # shown by the reply text itself; a status line would cut it in two
        end_reply()
        console.print(STATE_LOOK[state])

    def on_text(kind: str, text: str) -> None:
        nonlocal replying
        if kind == "reply":
            if not replying:
                console.print("plush: ", end="", highlight=False)
                replying = True
            console.print(text, end="", highlight=False, markup=False)
            return
        end_reply()
        if kind == "heard":
            console.print(f"you: {escape(text)}" if text else "[dim](heard nothing)[/]", highlight=False)
        elif kind == "error":
            console.print(f"[red]{escape(text)}[/]", highlight=False)

    return on_state, on_text


def load_device_stt(config: PlushConfig) -> tuple[Transcriber | None, StreamingStt | None]:
    """The plush's own Whisper when it transcribes on the device, and its streaming front (VAD) when enabled."""
    if not transcribes_on_device(config.device):
        return None, None
    transcriber = Transcriber.from_config(config.stt, ModelStore.from_config(config.models))
    return transcriber, StreamingStt.from_config(transcriber, config.stt) if config.stt.streaming else None


async def run_device(
    config: PlushConfig, *, audio_file: Path | None, output_file: Path | None, console: Console
) -> int:
    """Returns the process exit status."""
    transcriber, streaming = load_device_stt(config)
    device = config.device

    def speaker() -> SpeakerSink:
        return SpeakerSink(device.output_device, device.prebuffer_ms)

    on_state, on_text = _terminal_ui(console)
    phrases = OfflinePhrases(cache_home() / "phrases", device.id)
    async with open_client(config) as client:
        if audio_file is not None:
            await client.wait_ready(device.connect_timeout_s)
            plush = Plush(device, client, transcriber, streaming=streaming, on_state=on_state, on_text=on_text)
            pcm = read_audio_file(audio_file, device.sample_rate)
            try:  # a failed turn still writes (or plays) what arrived before the failure
                result = await plush.take_turn(pcm, WavSink(output_file) if output_file else speaker())
            except PlushError as exc:
                on_text("error", str(exc))  # on its own line, after the reply text that came before it
                return 1
            _summary(console, result, output_file)
            return 0 if result.reply else 1
        controls = await open_controls(device)
        try:

            def show(state: State) -> None:
                on_state(state)
                controls.show(state.value)

            plush = Plush(
                device, client, transcriber, streaming=streaming, phrases=phrases, on_state=show, on_text=on_text
            )
            try:  # a plush on a shelf starts even when the server is not up yet, and waits for it
                await client.wait_ready(device.connect_timeout_s)
                await phrases.refresh(client)
            except UnreachableError as exc:
                on_text("error", str(exc))
                await plush.go_offline()
            recorder = Recorder(device.sample_rate, device.input_device, device.max_record_seconds)
            await plush.run(controls.events(), recorder, speaker)
        finally:
            await controls.aclose()
        return 0


async def open_controls(device: DeviceConfig) -> Controls:
    """The button and lights the config names, ready to use."""
    if device.button == "serial":
        from plush.device.controls.serial_paw import SerialPaw

        paw = SerialPaw(device.serial_port)
        await paw.start(timeout_s=device.connect_timeout_s, required=False)  # it may be plugged in later
        return paw
    if device.button == "gpio":
        from plush.device.controls.gpio import GpioButton

        return GpioButton(device.gpio_button_pin, device.gpio_led_pin)
    if not os.isatty(sys.stdin.fileno()):
        raise PlushError("the keyboard button needs a terminal for the space bar; use --audio-file otherwise")
    return KeyboardButton()


def _summary(console: Console, result: TurnResult, output_file: Path | None) -> None:
    console.print()
    for problem in result.errors:
        console.print(f"[red]{problem}[/]", highlight=False)
    timings = ", ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings.items())
    if result.stt_after_release_ms is not None:
        timings = f"speech to text {result.stt_after_release_ms:.0f} ms after release; {timings}"
    console.print(f"[dim]answered by {result.backend or '-'} ({result.backend_reason or '-'}); {timings}[/]")
    if output_file is not None and result.audio_chunks:
        console.print(f"reply audio: {output_file}")
