"""Voice notes in: fetched from Telegram, checked, kept when the owner asked, and transcribed by the server's
Whisper (the same model and settings as a plush's audio streamed to the server).

The checks come before the download where Telegram already says enough (a note longer than
`max_voice_seconds`, a file too big for that), so a stranger-sized file never reaches memory; the decoder checks
again, since those numbers come from the sender's app.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.config import data_home
from plush.errors import AudioFormatError
from plush.logs import get_logger
from plush.server.telegram.delivery import deliver, seconds_of
from plush.voice_models.audio import WHISPER_RATE, FloatAudio, pcm16_to_float
from plush.voice_models.stt import Transcriber, TranscriptResult
from plush.voice_models.vad import SileroVad, SpeechSegmenter

log = get_logger(__name__)
BYTES_PER_SECOND_CEILING = 64_000
"""Far above any voice note's bitrate (Telegram's are ~4 KB/s; an MP3 at 320 kbit/s is 40 KB/s): a file over
`max_voice_seconds` times this is refused unread."""


class VoiceNoteError(AudioFormatError):
    """A voice note the bot will not listen to; the message is said to the sender as it is."""


@dataclass(frozen=True)
class Heard:
    text: str
    language: str
    stt_ms: float
    seconds: float


def voice_notes_dir(user_id: int) -> Path:
    """Where a user's kept voice notes go (read by `plush voice import --telegram`)."""
    return data_home() / "telegram" / "voice_notes" / str(user_id)


class Listener:
    """Turns a message's voice note (or audio file) into text with the server's Whisper, one at a time."""

    def __init__(self, transcriber: Transcriber | None, *, max_seconds: float, keep: bool) -> None:
        self.transcriber = transcriber
        self.max_seconds = max_seconds
        self.keep = keep
        self._vad: SileroVad | None = None
        self._one_at_a_time = asyncio.Semaphore(1)
        """Whisper uses every core: two notes at once would only finish later together."""

    async def hear(self, bot: Any, user_id: int, message_id: int, media: Any) -> Heard:
        """The words of `media` (a Voice or Audio); VoiceNoteError with a message for the sender otherwise."""
        from plush.voice_models.ogg_opus import decode_voice_note

        if self.transcriber is None:
            raise VoiceNoteError("I can't listen to voice notes here (the server runs without Whisper); write to me")
        if seconds_of(media, "duration") > self.max_seconds:
            raise VoiceNoteError(self._too_long())
        if (media.file_size or 0) > self.max_seconds * BYTES_PER_SECOND_CEILING:
            raise VoiceNoteError(self._too_long())
        telegram_file = await deliver(lambda: bot.get_file(media.file_id), what="getFile")
        data = bytes(await telegram_file.download_as_bytearray())
        if self.keep:
            await asyncio.to_thread(self._keep, user_id, message_id, data)
        try:
            pcm = await asyncio.to_thread(decode_voice_note, data, max_seconds=self.max_seconds, rate=WHISPER_RATE)
        except AudioFormatError as exc:
            reason = str(exc)
            raise VoiceNoteError(reason[:1].upper() + reason[1:] + ".") from exc
        audio = pcm16_to_float(pcm.tobytes())
        async with self._one_at_a_time:
            start = time.perf_counter()
            if not await asyncio.to_thread(self._has_speech, audio):  # Whisper would make words up from silence
                return Heard("", "", (time.perf_counter() - start) * 1000, pcm.size / WHISPER_RATE)
            result: TranscriptResult = await asyncio.to_thread(self.transcriber.transcribe, audio)
        return Heard(
            result.text.strip(), result.language, (time.perf_counter() - start) * 1000, pcm.size / WHISPER_RATE
        )

    def _has_speech(self, audio: FloatAudio) -> bool:
        """Whether Silero VAD finds any speech in the note (the model is loaded at the first note)."""
        if self._vad is None:
            self._vad = SileroVad()
        segmenter = SpeechSegmenter(self._vad)
        return bool(segmenter.feed(audio) or segmenter.finish())

    def _too_long(self) -> str:
        return f"That voice note is too long for me: {self.max_seconds:g} seconds at most, please."

    def _keep(self, user_id: int, message_id: int, data: bytes) -> None:
        folder = voice_notes_dir(user_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{message_id}.ogg"
        path.write_bytes(data)
        log.info("telegram_voice_note_kept", user_id=user_id, path=str(path), bytes=len(data))
