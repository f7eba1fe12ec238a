"""`plush device doctor`: check everything a plush needs, and say what to fix.

Each check is independent and short (a second of microphone, a tenth of a second of speaker, one handshake,
one call to the server), so the doctor can run on a plush in the field over SSH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from plush.config import PlushConfig
from plush.errors import PlushError


@dataclass(frozen=True)
class Check:
    """One thing the plush needs: whether it works, what was found, and what to do when it does not."""

    name: str
    ok: bool
    found: str
    fix: str = ""


async def check_microphone(config: PlushConfig) -> Check:
    from plush.device.audio_io import Recorder

    device = config.device
    try:
        recorder = Recorder(device.sample_rate, device.input_device, max_seconds=2)
        recorder.start()
        await asyncio.sleep(0.8)
        pcm = recorder.stop()
    except PlushError as exc:
        return Check(
            "microphone",
            False,
            str(exc),
            "plug in a USB microphone; `arecord -l` lists them; set [device] input_device",
        )
    if not pcm:
        return Check("microphone", False, "opened, but no audio arrived", "check `arecord -l` and the input device")
    level = float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2)))
    db = 20 * np.log10(max(level, 1.0) / 32768)
    found = f"{device.input_device or 'default input'}: {len(pcm) // 2} samples, level {db:.0f} dBFS"
    if level < 1.0:
        return Check("microphone", False, found + " (pure silence)", "unmute it: `alsamixer` (F4 for capture)")
    return Check("microphone", True, found)


async def check_speaker(config: PlushConfig) -> Check:
    from plush.device.audio_io import Player

    device = config.device
    try:
        player = Player(22050, device.output_device, prebuffer_ms=0)
        player.write(b"\x00\x00" * 2205)
        await asyncio.to_thread(player.finish, 5.0)
    except PlushError as exc:
        return Check(
            "speaker", False, str(exc), "plug in a USB speaker (a Pi 5 has no jack); set [device] output_device"
        )
    return Check("speaker", True, f"{device.output_device or 'default output'} plays")


async def check_button(config: PlushConfig) -> Check:
    device = config.device
    if device.button == "keyboard":
        return Check("button", True, 'the space bar (button = "keyboard")')
    if device.button == "serial":
        from plush.device.controls.serial_paw import SerialPaw

        paw = SerialPaw(device.serial_port, max_backoff_s=0.5)
        try:
            await paw.start(timeout_s=4)
        except PlushError as exc:
            return Check(
                "paw board", False, str(exc), "flash hardware/firmware/ and check the USB cable; `ls /dev/ttyACM*`"
            )
        await paw.aclose()
        return Check("paw board", True, f"firmware {paw.version} answered")
    from plush.device.controls.gpio import GpioButton

    try:
        controls = GpioButton(device.gpio_button_pin, device.gpio_led_pin)
    except PlushError as exc:
        return Check("GPIO button", False, str(exc), "see hardware/pi/README.md (Pi 5: lgpio)")
    await controls.aclose()
    return Check("GPIO button", True, f"GPIO{device.gpio_button_pin}, LED on GPIO{device.gpio_led_pin}")


async def check_server(config: PlushConfig) -> Check:
    from plush.device.client import AuthError
    from plush.device.paired_server import open_client

    device = config.device
    async with open_client(config) as client:
        try:
            await client.wait_ready(min(device.connect_timeout_s, 5.0))
            reply = await client.phrases()
        except AuthError as exc:
            fix = "pair this plush: `plush pair add NAME` on the server, then `plush pair join CODE` here"
            return Check("server", False, str(exc), fix)
        except PlushError as exc:
            return Check("server", False, str(exc), 'start `plush server` there, or set [device] server = "HOST:50051"')
    brain = f"; brain: {reply.brain}" if reply.brain else ""
    voices = f"; voices: {reply.voices}" if reply.voices else ""  # empty from a server older than the field
    return Check("server", True, f"{client.target} answers as {reply.persona or 'the companion'}{brain}{voices}")


async def check_speech_model(config: PlushConfig) -> Check:
    from plush.device.runtime import transcribes_on_device

    if not transcribes_on_device(config.device):
        return Check("speech model", True, 'transcribed on the server (device.stt = "server")')
    from plush.voice_models.model_store import ModelStore

    try:
        path = ModelStore.from_config(config.models).resolve(config.stt.model, "stt")
        if config.stt.streaming:
            from plush.voice_models.vad import SileroVad

            SileroVad()
    except PlushError as exc:
        return Check("speech model", False, str(exc), f"plush models download {config.stt.model}")
    return Check("speech model", True, f"{config.stt.model} at {path}")


CHECKS: tuple[Callable[[PlushConfig], Awaitable[Check]], ...] = (
    check_server,
    check_speech_model,
    check_microphone,
    check_speaker,
    check_button,
)


async def run_checks(config: PlushConfig) -> list[Check]:
    """Every check, in order; a check that crashes is reported as failed, never stops the others."""
    results = []
    for check in CHECKS:
        try:
            results.append(await check(config))
        except Exception as exc:  # a doctor must finish its round whatever it finds
            name = check.__name__.removeprefix("check_").replace("_", " ")
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}", "see the log above"))
    return results
