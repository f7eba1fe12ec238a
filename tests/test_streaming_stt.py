"""Streaming speech to text: segments decoded while the button is held equal the one-pass result.

Real Silero VAD (shipped in faster-whisper) and the suite's random-weight Whisper with fixed decoding settings.
The utterances are voiced-sounding signals (harmonics with a syllable envelope) that Silero takes for speech,
separated by pauses.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from conftest import ConfigFactory
from speech_signals import silence, utterance, voiced
from tiny_models import TinyModels

from plush.config import ServerConfig, SttConfig
from plush.device.client import CompanionClient
from plush.device.listening import Listening
from plush.device.runtime import Plush, WavSink
from plush.voice_models.audio import WHISPER_RATE, resample_pcm16
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import SttError, SttOptions, Transcriber, TranscriptResult
from plush.voice_models.vad import FRAME, SileroVad, SpeechSegmenter, VadOptions

# Three phrases with pauses between them; the owner releases the button 0.2 s after the last word.
THREE_PHRASES = utterance(
    silence(0.3), voiced(1.2), silence(0.7), voiced(1.0, 180), silence(0.6), voiced(0.8, 120), silence(0.2)
)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture
def stt(models: TinyModels, vad: SileroVad) -> StreamingStt:
    transcriber = Transcriber(models.whisper_dir, options=SttOptions(language="en", max_new_tokens=8))
    return StreamingStt(transcriber, vad)


def feed_like_a_microphone(feed: Callable[[bytes], None], pcm: bytes, rate: int = WHISPER_RATE) -> None:
    """Hand `pcm` over in 40 ms blocks, as the recorder's callback does."""
    step = rate * 40 // 1000 * 2
    for offset in range(0, len(pcm), step):
        feed(pcm[offset : offset + step])


def test_segments_close_at_pauses_and_do_not_depend_on_chunking(vad: SileroVad) -> None:
    audio = np.frombuffer(THREE_PHRASES, dtype="<i2").astype(np.float32) / 32768
    whole = SpeechSegmenter(vad)
    at_once = whole.feed(audio) + whole.finish(len(audio))
    pieces = SpeechSegmenter(vad)
    in_blocks = []
    for start in range(0, len(audio), 700):  # not a multiple of the VAD frame
        in_blocks += pieces.feed(audio[start : start + 700])
    in_blocks += pieces.finish(len(audio))
    assert at_once == in_blocks
    assert len(at_once) == 3
    starts = [s.start / WHISPER_RATE for s in at_once]
    assert starts == pytest.approx([0.3 - 0.16, 2.2 - 0.16, 3.8 - 0.16], abs=0.1)
    assert all(a.end <= b.start for a, b in itertools.pairwise(at_once)), "segments never overlap"


def test_silence_and_a_click_are_not_speech(vad: SileroVad) -> None:
    segmenter = SpeechSegmenter(vad, VadOptions(min_speech_ms=200))
    click = np.zeros(WHISPER_RATE, dtype=np.float32)
    click[8000:8040] = 0.9
    assert segmenter.feed(click) + segmenter.finish() == []


def test_a_long_monologue_is_cut_before_whispers_window_ends(vad: SileroVad) -> None:
    segmenter = SpeechSegmenter(vad, VadOptions(max_segment_s=2.0))
    audio = voiced(5.0).astype(np.float32)
    segments = segmenter.feed(audio) + segmenter.finish(len(audio))
    assert len(segments) >= 2
    assert all(s.seconds <= 2.0 + FRAME / WHISPER_RATE + 0.2 for s in segments)


def test_streamed_text_equals_the_one_pass_result_and_only_the_tail_waits_for_release(stt: StreamingStt) -> None:
    one_pass, reference = stt.transcribe_segmented(THREE_PHRASES)
    assert one_pass.text and len(reference.segments) == 3

    stream = stt.begin()
    feed_like_a_microphone(stream.feed, THREE_PHRASES)
    deadline = time.monotonic() + 20
    while len(stream.stats.segments) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the owner is still holding the button: earlier phrases are decoded meanwhile
    streamed = stream.finish()

    assert streamed.text == one_pass.text
    assert streamed.language == one_pass.language == "en"
    assert stream.stats.segments == reference.segments
    # The last phrase is decoded after release, or just before it if its padding arrived in time (see below).
    assert stream.stats.decoded_after_release_s in (0.0, pytest.approx(reference.segments[-1].seconds))
    total = stream.stats.decoded_while_held_s + stream.stats.decoded_after_release_s
    assert total == pytest.approx(sum(s.seconds for s in reference.segments))
    assert stream.stats.decoded_while_held_s >= sum(s.seconds for s in reference.segments[:2]) - 1e-6


def test_a_pause_before_release_leaves_nothing_to_decode(stt: StreamingStt) -> None:
    pcm = utterance(voiced(1.0), silence(0.8))
    stream = stt.begin()
    feed_like_a_microphone(stream.feed, pcm)
    deadline = time.monotonic() + 20
    while not stream.stats.segments and time.monotonic() < deadline:
        time.sleep(0.02)
    result = stream.finish()
    assert result.text
    assert stream.stats.decoded_after_release_s == 0.0


def wait_for(condition: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_a_moment_held_after_the_last_word_leaves_nothing_to_decode(stt: StreamingStt) -> None:
    """Released 0.3 s after the last word: the pause has not closed the phrase (min_silence_ms 400), but its
    padding is in, so it was decoded while the button was still down, and the text is the one-pass text."""
    pcm = utterance(voiced(1.0), silence(0.3))
    one_pass, reference = stt.transcribe_segmented(pcm)
    stream = stt.begin()
    feed_like_a_microphone(stream.feed, pcm)
    wait_for(lambda: stream._ahead is not None)
    result = stream.finish()
    assert result.text == one_pass.text != ""
    assert stream.stats.segments == reference.segments
    assert stream.stats.decoded_after_release_s == 0.0


def test_speaking_on_after_a_short_pause_drops_the_early_decode(stt: StreamingStt) -> None:
    pcm = utterance(voiced(1.0), silence(0.3), voiced(0.8, 150), silence(0.1))
    one_pass, reference = stt.transcribe_segmented(pcm)
    pause_end = int((1.0 + 0.3) * WHISPER_RATE) * 2
    stream = stt.begin()
    feed_like_a_microphone(stream.feed, pcm[:pause_end])
    wait_for(lambda: stream._ahead is not None)
    early = stream._ahead
    feed_like_a_microphone(stream.feed, pcm[pause_end:])
    result = stream.finish()
    assert early is not None and early[0] not in stream.stats.segments, "the phrase went on past the pause"
    assert result.text == one_pass.text and stream.stats.segments == reference.segments


def test_silence_gives_no_text_and_whisper_never_runs(stt: StreamingStt) -> None:
    result, stats = stt.transcribe_segmented(utterance(silence(1.5)))
    assert result.text == "" and stats.segments == []


def test_a_cancelled_transcription_stops_its_worker(stt: StreamingStt) -> None:
    stream = stt.begin()
    stream.feed(THREE_PHRASES)
    stream.cancel()
    stream._worker.join(timeout=20)
    assert not stream._worker.is_alive()


def test_a_48_khz_microphone_is_resampled_for_whisper(stt: StreamingStt) -> None:
    _, reference = stt.transcribe_segmented(THREE_PHRASES)
    listening = Listening(stt, 48000)
    feed_like_a_microphone(listening.on_audio, resample_pcm16(THREE_PHRASES, WHISPER_RATE, 48000), rate=48000)
    listening.release()
    transcription = listening.transcription
    assert transcription is not None
    result = transcription.finish()
    assert result.text
    assert result.audio_s == pytest.approx(len(THREE_PHRASES) / 2 / WHISPER_RATE, abs=0.01)
    found = transcription.stats.segments
    assert len(found) == 3
    for got, want in zip(found, reference.segments, strict=True):  # the same speech, within two VAD frames
        assert abs(got.start - want.start) <= 2 * FRAME and abs(got.end - want.end) <= 2 * FRAME


async def test_a_turn_from_a_file_uses_the_segmented_transcript(
    running_server: Any, make_config: ConfigFactory, stt: StreamingStt, tmp_path: Path
) -> None:
    config = make_config()
    expected, _ = stt.transcribe_segmented(THREE_PHRASES)
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "stream-test") as client:
        plush = Plush(config.device, client, stt.transcriber, streaming=stt)
        result = await plush.take_turn(THREE_PHRASES, WavSink(tmp_path / "out.wav"))
    assert result.transcript == expected.text
    assert result.reply and result.stt_after_release_ms is not None


async def test_the_streaming_transcription_is_handed_to_the_turn_at_release(
    running_server: Any, make_config: ConfigFactory, stt: StreamingStt, tmp_path: Path
) -> None:
    config = make_config()
    listening = Listening(stt, WHISPER_RATE)
    await asyncio.to_thread(feed_like_a_microphone, listening.on_audio, THREE_PHRASES)
    async with CompanionClient(f"127.0.0.1:{running_server.port}", "stream-test") as client:
        plush = Plush(config.device, client, stt.transcriber, streaming=stt)
        listening.release()
        result = await plush.take_turn(THREE_PHRASES, WavSink(tmp_path / "out.wav"), listening)
    expected, _ = stt.transcribe_segmented(THREE_PHRASES)
    assert result.transcript == expected.text and result.reply


def test_streaming_settings_come_from_the_config(stt: StreamingStt) -> None:
    built = StreamingStt.from_config(stt.transcriber, SttConfig(vad_threshold=0.7, min_silence_ms=250))
    assert (built.options.threshold, built.options.min_silence_ms) == (0.7, 250)


def test_the_fit_encoder_window_decodes_short_phrases_and_detects_their_language(models: TinyModels) -> None:
    fit = Transcriber(models.whisper_dir, options=SttOptions(max_new_tokens=8, encoder_window="fit"))
    phrase = np.frombuffer(utterance(voiced(1.2)), dtype="<i2").astype(np.float32) / 32768
    detected = fit.transcribe(phrase)
    assert detected.text and detected.language
    assert fit.transcribe(phrase, language="ko").language == "ko"
    tiny_blip = phrase[:800]  # 50 ms: padded to a second of silence, not an encoder error
    assert fit.transcribe(tiny_blip).language


def test_streaming_with_the_fit_window_equals_its_one_pass_result(models: TinyModels, vad: SileroVad) -> None:
    fit = Transcriber(models.whisper_dir, options=SttOptions(language="en", max_new_tokens=8, encoder_window="fit"))
    stt = StreamingStt(fit, vad)
    one_pass, _ = stt.transcribe_segmented(THREE_PHRASES)
    stream = stt.begin()
    feed_like_a_microphone(stream.feed, THREE_PHRASES)
    assert stream.finish().text == one_pass.text != ""


class HeldWhisper:
    """A Whisper stand-in whose decodes wait until the test lets them go, each telling the test it started."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fail: bool = False) -> None:
        self.options = SttOptions(language="en")
        self.go = threading.Event()
        self.started: asyncio.Queue[None] = asyncio.Queue()
        self._loop = loop
        self._fail = fail

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> TranscriptResult:
        self._loop.call_soon_threadsafe(self.started.put_nowait, None)
        self.go.wait(timeout=120)
        if self._fail:
            raise RuntimeError("the decoder broke")
        return TranscriptResult(text="hello", language="en", audio_s=len(audio) / WHISPER_RATE, elapsed_s=0.0)


async def test_utterances_waiting_for_whisper_leave_the_thread_pool_to_tts(vad: SileroVad) -> None:
    # A small machine's default pool (2 cores: 6 threads) is no bigger than max_stt_in_flight utterances: each one
    # finishing must hold no pool thread, or TTS for other turns (asyncio.to_thread) waits for their Whisper.
    loop = asyncio.get_running_loop()
    open_utterances = ServerConfig().max_stt_in_flight
    pool = ThreadPoolExecutor(max_workers=open_utterances)
    loop.set_default_executor(pool)
    whisper = HeldWhisper(loop)
    stt = StreamingStt(cast(Transcriber, whisper), vad)
    streams = [stt.begin() for _ in range(open_utterances)]
    try:
        for stream in streams:
            stream.feed(THREE_PHRASES)
        for _ in streams:  # every worker is inside Whisper
            await asyncio.wait_for(whisper.started.get(), timeout=60)
        finishing = [asyncio.ensure_future(stream.finish_async()) for stream in streams]
        await asyncio.sleep(0)  # each finish is under way

        spoken = await asyncio.wait_for(asyncio.to_thread(lambda: "synthesized"), timeout=30)

        assert spoken == "synthesized"
        assert not any(task.done() for task in finishing), "the utterances were still being transcribed"
        whisper.go.set()
        results = await asyncio.wait_for(asyncio.gather(*finishing), timeout=120)
        assert all(result.text.startswith("hello") for result in results)
    finally:
        whisper.go.set()
        for stream in streams:
            stream.cancel()
        pool.shutdown(wait=False)


async def test_a_failed_decode_is_raised_by_finish_async(vad: SileroVad) -> None:
    whisper = HeldWhisper(asyncio.get_running_loop(), fail=True)
    whisper.go.set()
    stream = StreamingStt(cast(Transcriber, whisper), vad).begin()
    stream.feed(THREE_PHRASES)
    with pytest.raises(SttError, match="the decoder broke"):
        await asyncio.wait_for(stream.finish_async(), timeout=60)


async def test_finish_async_after_a_cancel_returns_once_the_worker_stopped(vad: SileroVad) -> None:
    whisper = HeldWhisper(asyncio.get_running_loop())
    stream = StreamingStt(cast(Transcriber, whisper), vad).begin()
    stream.feed(THREE_PHRASES)
    await asyncio.wait_for(whisper.started.get(), timeout=60)
    stream.cancel()
    whisper.go.set()
    result = await asyncio.wait_for(stream.finish_async(), timeout=60)  # woken by the stopped worker
    assert result.text in ("", "hello"), "at most the segment being decoded when it was cancelled"
    stream._worker.join(timeout=20)
    assert not stream._worker.is_alive()
