"""Speech to text while the button is held: each pause-closed speech segment is decoded as soon as it closes.

Whisper decodes a 30 s window whatever the audio's length, so decoding a 5 s utterance only after release costs
a whole window plus every token. Here a worker thread runs the VAD on the microphone's audio as it arrives and
hands each closed segment (speech followed by a pause) to Whisper at once; at release only the segment still
open is left. Because segments depend only on the audio (see `SpeechSegmenter`), the streamed text equals what
`transcribe_segmented` gives for the same recording in one pass.

The open segment is decoded ahead of time too, once it is settled (speech stopped and its padding arrived,
`SpeechSegmenter.settled`) and the worker has caught up with the microphone: an owner who lets go of the button
a moment after the last word (but before the pause closes the segment, `min_silence_ms`) finds its text ready.
If they speak on, that decode is dropped; it is used only for a segment exactly as it closes, so the text is
still the one-pass text. `on_settled` hears each settled text so far (and "" when speech starts again after
one), which the plush passes on to the server so it can start the brain before the release. The first
segment's language is kept for the rest of the utterance, so a short later phrase is not misdetected (and is not
detected again).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from plush.config import SttConfig
from plush.errors import PlushError
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float
from plush.voice_models.stt import SttError, Transcriber, TranscriptResult
from plush.voice_models.vad import Segment, SileroVad, SpeechSegmenter, VadOptions

_CANCEL: Final = object()


@dataclass
class StreamingStats:
    """How the work was split around the release of the button."""

    segments: list[Segment] = field(default_factory=list)
    decoded_while_held_s: float = 0.0
    """Seconds of audio decoded before release."""
    decoded_after_release_s: float = 0.0
    """Seconds of audio decoded after release: only the tail, ideally."""
    release_to_text_s: float = 0.0
    """From `finish()` to the final text."""


class StreamingTranscription:
    """One utterance being transcribed as it is recorded: `feed` audio from any thread, then `finish` (or, on an
    event loop, `finish_async`)."""

    def __init__(self, transcriber: Transcriber, segmenter: SpeechSegmenter) -> None:
        self._transcriber = transcriber
        self._segmenter = segmenter
        self._queue: queue.SimpleQueue[bytes | object | None] = queue.SimpleQueue()
        self._pcm = bytearray()
        self._texts: list[str] = []
        self._language = transcriber.options.language
        self._released = threading.Event()
        self._cancelled = threading.Event()
        self._error: BaseException | None = None
        self._ahead: tuple[Segment, TranscriptResult] | None = None
        """The settled open segment, decoded before it closed."""
        self.stats = StreamingStats()
        self._ended = False
        """The worker is done (finished, cancelled or failed); guarded by `_ending`."""
        self._ending = threading.Lock()
        self._on_end: list[Callable[[], object]] = []
        """What to call, from the worker's thread, when it is done (`finish_async`'s wake-up)."""
        self.on_settled: Callable[[str, str], None] | None = None
        """Called from the worker's thread, while the button is held, with (text so far, language) each time it
        has settled (speech stopped and decoded), and with ("", language) when speech starts again after it; set
        it before feeding audio."""
        self._reported = ""
        self._worker = threading.Thread(target=self._run, name="plush-streaming-stt", daemon=True)
        self._worker.start()

    def feed(self, pcm16: bytes) -> None:
        """Add mono s16le audio at 16 kHz (safe from the audio callback's thread; never blocks)."""
        if pcm16:
            self._queue.put(bytes(pcm16))

    def finish(self) -> TranscriptResult:
        """The button is up: decode what is left and return the whole utterance's text (blocking)."""
        started = time.perf_counter()
        self._release()
        self._worker.join()
        return self._result(started)

    async def finish_async(self) -> TranscriptResult:
        """`finish` for the event loop, holding no thread while it waits: the worker resolves a future on this loop
        when it is done (a pool thread parked per utterance would starve the loop's other thread work, TTS
        among it, with `max_stt_in_flight` utterances finishing at once)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()
        self._when_ended(lambda: loop.call_soon_threadsafe(_resolve, ended))
        self._release()
        await ended
        return self._result(started)

    def _release(self) -> None:
        self._released.set()
        self._queue.put(None)

    def _result(self, started: float) -> TranscriptResult:
        """The whole utterance's text, once the worker is done (its error raised here, in the caller's thread)."""
        if self._error is not None:
            raise self._error
        self.stats.release_to_text_s = time.perf_counter() - started
        return TranscriptResult(
            text=" ".join(self._texts),
            language=self._language or "",
            audio_s=len(self._pcm) / 2 / WHISPER_RATE,
            elapsed_s=self.stats.release_to_text_s,
        )

    def _when_ended(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the worker is done: now if it already is, else from the worker's thread."""
        with self._ending:
            if not self._ended:
                self._on_end.append(callback)
                return
        callback()

    def _ended_now(self) -> None:
        with self._ending:
            self._ended = True
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            with contextlib.suppress(RuntimeError):  # the waiting loop is closed: nobody is left to wake
                callback()

    def cancel(self) -> None:
        """Drop the utterance (barge-in, quit, a turn the server stopped): the worker stops after the segment it is
        decoding, whatever audio is still queued and even after `finish` was asked for."""
        self._cancelled.set()
        self._queue.put(_CANCEL)

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None and not self._cancelled.is_set():
                if item is _CANCEL:
                    return
                assert isinstance(item, bytes)
                self._pcm.extend(item)
                for segment in self._segmenter.feed(pcm16_to_float(item)):
                    if self._cancelled.is_set():
                        return
                    self._decode(segment)
                self._decode_ahead()
                self._report_settled()
            for segment in self._segmenter.finish(len(self._pcm) // 2):
                if self._cancelled.is_set():
                    return
                self._decode(segment)
        except BaseException as exc:  # surfaced by finish(), in the caller's thread
            self._error = exc if isinstance(exc, PlushError) else SttError(f"speech recognition failed: {exc}")
        finally:
            self._ended_now()

    def _decode_ahead(self) -> None:
        """Decode the settled open segment while waiting for the microphone (never while behind it, nor after
        release: then closing it costs the same)."""
        if self._released.is_set() or not self._queue.empty() or self._cancelled.is_set():
            return
        segment = self._segmenter.settled()
        if segment is None or (self._ahead is not None and self._ahead[0] == segment):
            return
        self._ahead = (segment, self._transcribe(segment))

    def _report_settled(self) -> None:
        """Tell `on_settled` when the text so far has settled or speech started again (only once caught up with
        the microphone, and only while the button is held: the final text follows at release)."""
        if self.on_settled is None or self._released.is_set() or not self._queue.empty():
            return
        language = self._language or (self._ahead[1].language if self._ahead else "")
        if self._segmenter.voiced:
            text = ""
        elif self._segmenter.in_speech:
            settled, ahead = self._segmenter.settled(), self._ahead
            if settled is None or ahead is None or ahead[0] != settled:
                return  # a pause, not yet settled
            text = " ".join(filter(None, [*self._texts, ahead[1].text]))
        else:
            text = " ".join(self._texts)
        if text != self._reported:
            self._reported = text
            self.on_settled(text, language)

    def _transcribe(self, segment: Segment) -> TranscriptResult:
        audio = pcm16_to_float(bytes(self._pcm[segment.start * 2 : segment.end * 2]))
        return self._transcriber.transcribe(audio, language=self._language)

    def _decode(self, segment: Segment) -> None:
        ahead, self._ahead = self._ahead, None
        early = ahead is not None and ahead[0] == segment
        result = ahead[1] if ahead is not None and early else self._transcribe(segment)
        if result.text:  # a cough that decoded to nothing must not choose the language of what follows
            self._language = self._language or result.language
            self._texts.append(result.text)
        self.stats.segments.append(segment)
        if self._released.is_set() and not early:
            self.stats.decoded_after_release_s += segment.seconds
        else:
            self.stats.decoded_while_held_s += segment.seconds


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the waiter may have been cancelled meanwhile
        future.set_result(None)


class StreamingStt:
    """A loaded Whisper and VAD that start a `StreamingTranscription` per utterance."""

    def __init__(self, transcriber: Transcriber, vad: SileroVad | None = None, options: VadOptions | None = None):
        self.transcriber = transcriber
        self.vad = vad or SileroVad()
        self.options = options or VadOptions()

    @classmethod
    def from_config(cls, transcriber: Transcriber, config: SttConfig) -> StreamingStt:
        options = VadOptions(threshold=config.vad_threshold, min_silence_ms=config.min_silence_ms)
        return cls(transcriber, options=options)

    def begin(self) -> StreamingTranscription:
        return StreamingTranscription(self.transcriber, SpeechSegmenter(self.vad, self.options))

    def transcribe_segmented(self, pcm16: bytes) -> tuple[TranscriptResult, StreamingStats]:
        """The same segments and decoding for a whole recording at once (a file, or the one-pass reference)."""
        stream = self.begin()
        stream.feed(pcm16)
        result = stream.finish()
        return result, stream.stats
