"""Speech out: turn a reply's pieces into audio chunks for the wire, in the rate the device asked for.

The voice can change while the server runs (`plush voice use NAME`): at each turn's start `output_rate` looks at
the voice store's marker (one `stat`), and the turn's first synthesis loads the new voice in a worker thread.

A voice per language: each piece is split by script (language_parts.py) and each part spoken by the voice for its
language: `[tts] voices` first, else the main voice when it speaks that language, else, for Korean, the built-in
espeak-ng fallback (never an English voice reading Hangul). Every part is resampled to the turn's one rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.audio import chunk_pcm, resample_pcm16
from plush.voice_models.cloning.voice_store import VoiceStore
from plush.voice_models.espeak_voice import EspeakVoice
from plush.voice_models.language_parts import language_parts
from plush.voice_models.opus import OpusEncoder, opus_rate, pack_packets
from plush.voice_models.tts import Synthesizer, TtsError, Voice

log = get_logger(__name__)


class VoiceSwitch:
    """Follows the voice store's active-voice marker; `load` builds the voice it names (None: the config's)."""

    def __init__(self, store: VoiceStore, load: Callable[[str | None], Synthesizer]) -> None:
        self.store = store
        self.load = load
        self._stamp = store.stamp()

    def changed(self) -> bool:
        """True once after each `plush voice use` (a stat of the marker, cheap enough for every turn)."""
        stamp = self.store.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


FALLBACK_LANGUAGES = ("ko",)
"""Languages that get the built-in espeak-ng voice when no voice of theirs is set: an English voice reading them
is not understood (bench/README.md, the Korean table)."""


def speaks(voice: Voice, language: str) -> bool:
    """Whether `voice` was made for `language` (`ko`, `en`): its espeak-ng voice is that language's."""
    return voice.language.split("-")[0] == language


class SpeechOut:
    """Wraps the voices: synthesis runs in a worker thread so the event loop keeps streaming."""

    def __init__(
        self,
        synthesizer: Voice,
        chunk_ms: int,
        switch: VoiceSwitch | None = None,
        *,
        voices: dict[str, Voice] | None = None,
    ) -> None:
        self.synthesizer = synthesizer
        """The main voice (`[tts] voice`, or the one `plush voice use` chose): every language it can speak."""
        self.voices = dict(voices or {})
        """A voice per language (`[tts] voices`), before the main one."""
        self._fallbacks: dict[str, Voice | None] = {}
        self.chunk_ms = chunk_ms
        self.switch = switch
        self._switch_pending = False
        self._switching = asyncio.Lock()

    @property
    def native_rate(self) -> int:
        return self.synthesizer.sample_rate

    def output_rate(self, wanted: int, opus: bool) -> int:
        """The rate a reply is sent at: what the device asked for (0: the voice's own), an Opus rate for Opus."""
        if self.switch is not None and self.switch.changed():
            self._switch_pending = True  # loaded by the turn's first `speak`, off the event loop
        rate = wanted or self.native_rate
        return opus_rate(rate) if opus else rate

    def voice_for(self, language: str) -> Voice:
        """The voice that speaks `language`: `[tts] voices`, the main voice if it speaks it, the built-in fallback
        (Korean), else the main voice."""
        if (chosen := self.voices.get(language)) is not None:
            return chosen
        if speaks(self.synthesizer, language) or language not in FALLBACK_LANGUAGES:
            return self.synthesizer
        if language not in self._fallbacks:
            try:
                self._fallbacks[language] = EspeakVoice(language)
            except TtsError as exc:  # no espeak-ng: the main voice, said once
                log.warning("no_voice_for_language", language=language, error=str(exc))
                self._fallbacks[language] = None
        return self._fallbacks[language] or self.synthesizer

    def description(self, languages: tuple[str, ...] = ("en", "ko")) -> str:
        """Which voice speaks each language, for the dashboard: "en: en_US-joe-medium · ko: espeak-ng ko ..."."""
        return " · ".join(f"{language}: {self.voice_for(language).label}" for language in languages)

    async def speak(
        self, text: str, sample_rate: int, encoder: OpusEncoder | None = None, *, spoken_by: set[str] | None = None
    ) -> list[bytes]:
        """Synthesize `text` as ~chunk_ms pieces at `sample_rate`: s16le, or Opus packets when given an encoder.
        The labels of the voices that spoke it are added to `spoken_by`.

        Synthesis, resampling and encoding all run in a worker thread, off the event loop.
        """
        if self._switch_pending:
            await self._switch_voice()
        return await asyncio.to_thread(self._speak, text, sample_rate, encoder, spoken_by)

    async def _switch_voice(self) -> None:
        """Load the voice the store's marker names; a voice that fails to load leaves the current one speaking."""
        async with self._switching:
            if not self._switch_pending or self.switch is None:
                return
            self._switch_pending = False
            name = self.switch.store.active()
            try:
                self.synthesizer = await asyncio.to_thread(self.switch.load, name)
            except PlushError as exc:
                log.error("voice_switch_failed", voice=name or "default", error=str(exc))
                return
            log.info("voice_switched", voice=name or "default", sample_rate=self.synthesizer.sample_rate)

    def _speak(self, text: str, rate: int, encoder: OpusEncoder | None, spoken_by: set[str] | None) -> list[bytes]:
        default = self.synthesizer.language.split("-")[0]
        pcm = b""
        for language, part in language_parts(text, default):
            voice = self.voice_for(language)
            pcm += resample_pcm16(voice.synthesize(part), voice.sample_rate, rate)
            if spoken_by is not None:
                spoken_by.add(voice.label)
        chunks = list(chunk_pcm(pcm, rate, self.chunk_ms))
        if encoder is None:
            return chunks
        return [pack_packets(packets) for chunk in chunks if (packets := encoder.encode(chunk))]

    async def finish(self, encoder: OpusEncoder | None) -> list[bytes]:
        """The encoder's last packets at the end of a reply (nothing for PCM)."""
        if encoder is None:
            return []
        packets = await asyncio.to_thread(encoder.flush)
        return [pack_packets(packets)] if packets else []
