"""Retention (`[memory] retention_days`) for everything a turn leaves behind: its row in the store and, when the
owner chose to keep reply audio (`[dashboard] keep_audio`), its WAV file in `turn-audio/` in the server's data
folder.

The audio is what the child heard, so it must not outlive the turn it belongs to: after turns are deleted, every
file whose turn is no longer in the store goes too. The first pass after a start also sweeps files left by
earlier versions (which never deleted them) or by a turn whose row could not be written. A file is written only
after its turn is stored, so a turn in progress never loses its audio to a sweep.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from plush.config import ServerConfig
from plush.logs import get_logger
from plush.server.memory import Memory

log = get_logger(__name__)
AUDIO_DIR = "turn-audio"


def audio_dir(config: ServerConfig) -> Path:
    """Where kept reply audio lives: `turn-audio/` in the server's data folder, one `<turn id>.wav` per turn."""
    return config.data_folder() / AUDIO_DIR


class Retention:
    """Deletes old turns (through `memory`) and the audio files of turns that are gone."""

    def __init__(self, memory: Memory, audio: Path) -> None:
        self.memory = memory
        self.audio = audio
        self._swept = False

    async def apply(self, now: float | None = None) -> int:
        """Apply `retention_days` as of `now` (default: the present); returns how many turns were deleted."""
        deleted = await self.memory.prune(now)
        if deleted or not self._swept:
            await self.sweep_audio()
        return deleted

    async def sweep_audio(self) -> int:
        """Delete the audio of every turn no longer in the store; returns how many files went."""
        files = await asyncio.to_thread(self._files)
        gone = 0
        for path in files:
            if await self.memory.store.get_turn(path.stem) is None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                gone += 1
        self._swept = True
        if gone:
            log.info("turn_audio_pruned", files=gone, folder=str(self.audio))
        return gone

    def _files(self) -> list[Path]:
        return sorted(self.audio.glob("*.wav")) if self.audio.is_dir() else []
