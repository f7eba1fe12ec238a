"""What the plush says when it cannot reach the server, and how it finds the server again.

The persona's offline phrase is synthesized by the server (the plush has no voice of its own) while it is
reachable, and kept on disk, so it is there even after a restart with the server down. When a turn finds the
server gone, the plush says it, shows "offline", and looks for the server again with exponential backoff and
jitter (many plushes never retry in step); when the server answers it fetches the phrase afresh and is idle.
"""

from __future__ import annotations

import asyncio
import random
import wave
from collections.abc import Callable
from pathlib import Path

from plush.device.client import CompanionClient, ServerError
from plush.logs import get_logger
from plush.voice_models.audio import read_wav, write_wav

log = get_logger(__name__)


class OfflinePhrases:
    """The offline phrase of one plush, cached as a WAV file in `folder`."""

    def __init__(self, folder: Path, device_id: str) -> None:
        self.path = folder / f"{device_id}-offline.wav"

    async def refresh(self, client: CompanionClient) -> bool:
        """Fetch the phrase from the server (after each connect: the persona may have changed)."""
        try:
            reply = await client.phrases()
        except ServerError as exc:
            log.warning("offline_phrase_not_fetched", error=str(exc))
            return False
        for phrase in reply.phrases:
            if phrase.name == "offline" and phrase.audio.data:
                try:  # off the event loop: a slow SD card must not hold up the button or the speaker
                    await asyncio.to_thread(self._keep, bytes(phrase.audio.data), phrase.audio.sample_rate)
                except OSError as exc:
                    log.warning("offline_phrase_not_kept", path=str(self.path), error=str(exc))
                    return False
                return True
        return False

    def _keep(self, pcm: bytes, sample_rate: int) -> None:
        """Write the phrase whole, then swap it in: a power cut mid-write leaves the old one."""
        tmp = self.path.with_suffix(".tmp")
        write_wav(tmp, pcm, sample_rate)
        tmp.replace(self.path)

    def load(self) -> tuple[bytes, int] | None:
        """(pcm, sample_rate) of the kept phrase, or None when there is none yet."""
        try:
            return read_wav(self.path)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            log.debug("no_offline_phrase", path=str(self.path), error=str(exc))
            return None


async def reconnect(
    client: CompanionClient,
    *,
    on_back: Callable[[], None],
    first_wait_s: float = 0.5,
    max_wait_s: float = 15.0,
    attempt_s: float = 3.0,
) -> None:
    """Wait for the server with exponential backoff and jitter; call `on_back` once it answers."""
    wait = first_wait_s
    while True:
        try:
            await client.wait_ready(attempt_s)
        except ServerError:
            await asyncio.sleep(wait * random.uniform(0.8, 1.2))
            wait = min(wait * 2, max_wait_s)
            continue
        log.info("server_back", server=client.target)
        on_back()
        return
