"""Streaming speech against the naive pipeline, on models at real dimensions (random weights, real compute cost).

Plush: transcribe each pause-closed phrase while the button is held (only the last one after release), cut the
reply at the first clause boundary and synthesize each piece as soon as it is complete. Naive: record
everything, transcribe after release, wait for the whole reply, synthesize it all, then play.

1. release -> final transcript, for a 5 s utterance of three phrases (Whisper base, int8): when the owner
   releases right after the last word, and when they release half a second later (the usual case).
2. first text token -> first audio chunk (a Piper voice of the "medium" size), with an LLM that streams at a
   fixed pace.
3. release -> first audio: the two above with an LLM of fixed time-to-first-token, end to end through the real
   brain (chunker, Piper in worker threads, the turn log).

    .venv/bin/pip install -e '.[bench]'      # torch, to build the medium Piper voice (once)
    .venv/bin/python bench/streaming_speech.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from real_size_models import piper_medium, whisper_base  # noqa: E402
from speech_signals import silence, voiced  # noqa: E402
from speech_signals import utterance as speech  # noqa: E402

from plush.config import MemoryConfig  # noqa: E402
from plush.logs import setup_logging  # noqa: E402
from plush.server.companion import Companion, TurnRequestData  # noqa: E402
from plush.server.llm.base import LlmBackend, Prompt, Usage  # noqa: E402
from plush.server.llm.router import LlmRouter  # noqa: E402
from plush.server.memory import Memory  # noqa: E402
from plush.server.persona import PersonaSource  # noqa: E402
from plush.server.speech import SpeechOut  # noqa: E402
from plush.server.store import Store  # noqa: E402
from plush.voice_models.audio import pcm16_to_float  # noqa: E402
from plush.voice_models.streaming_stt import StreamingStt  # noqa: E402
from plush.voice_models.stt import SttOptions, Transcriber  # noqa: E402
from plush.voice_models.tts import Synthesizer  # noqa: E402

TOKENS_PER_SPEECH_SECOND = 4
"""About how many Whisper tokens a second of speech becomes; random weights never stop, so decoding is capped."""
REPLY = (
    "Well, that is a really good question, my friend. Let me think about it for a moment. "
    "I believe the moon looks bigger near the horizon because our eyes compare it with trees and houses. "
    "Shall we look at it together tonight?"
)


def utterance(trailing_silence: float) -> bytes:
    """Three phrases (1.6, 1.4 and 1.2 s) with pauses between them: about 5 s in all."""
    parts = [voiced(1.6), silence(0.5), voiced(1.4, 180), silence(0.5), voiced(1.2, 120)]
    return speech(*parts, silence(trailing_silence))


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(label: str, ours: list[float], naive: list[float]) -> None:
    a, b = median_ms(ours), median_ms(naive)
    ratio = f"{b / a:6.1f}x" if a >= 1 else "  (text ready at release)"
    print(f"  {label:<52} Plush {a:8.0f} ms   naive {b:8.0f} ms   naive/Plush {ratio}")


def release_to_transcript(runs: int, trailing: float, window: str = "full") -> tuple[list[float], list[float]]:
    """Release -> text with streaming STT (encoder `window`) and with the naive whole-utterance decode."""
    model = whisper_base()
    pcm = utterance(trailing)
    speech_s = 4.2
    naive_whisper = Transcriber(model, options=SttOptions(language="en", max_new_tokens=int(speech_s * 4)))
    # Random weights always "loop", so the fit window's fallback to the full window is off: it times the window.
    phrase_whisper = Transcriber(
        model, options=SttOptions(language="en", max_new_tokens=6, encoder_window=window, fit_fallback=False)
    )
    stt = StreamingStt(phrase_whisper)
    _, reference = stt.transcribe_segmented(pcm)
    closed_before_release = len(reference.segments) - (0 if trailing >= 0.45 else 1)
    ours, naive = [], []
    for _ in range(runs):
        stream = stt.begin()
        for offset in range(0, len(pcm), 1280):  # 40 ms blocks, as the microphone delivers them
            stream.feed(pcm[offset : offset + 1280])
        while len(stream.stats.segments) < closed_before_release:  # still holding: earlier phrases decode
            time.sleep(0.01)
        time.sleep(0.1)
        started = time.perf_counter()
        stream.finish()
        ours.append(time.perf_counter() - started)

        started = time.perf_counter()
        naive_whisper.transcribe(pcm16_to_float(pcm))
        naive.append(time.perf_counter() - started)
    return ours, naive


class PacedLlm(LlmBackend):
    """Streams REPLY word by word at `tokens_per_s` after `ttft_s`: a stand-in LLM of known speed."""

    name = "paced"

    def __init__(self, ttft_s: float, tokens_per_s: float) -> None:
        self.ttft_s, self.step_s = ttft_s, 1 / tokens_per_s

    async def stream(self, prompt: Prompt, usage: Usage | None = None) -> AsyncGenerator[str]:
        await asyncio.sleep(self.ttft_s)
        for i, word in enumerate(REPLY.split(" ")):
            if i:
                await asyncio.sleep(self.step_s)
            yield word if i == 0 else " " + word


async def brain_to_audio(runs: int, ttft_s: float, tokens_per_s: float) -> dict[str, list[float]]:
    """Per run: first token -> first audio, and request -> first audio; naive: whole reply, then synthesize."""
    voice = Synthesizer(piper_medium())
    results: dict[str, list[float]] = {"token_ours": [], "token_naive": [], "start_ours": [], "start_naive": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(Path(tmp) / "bench.db") as store:
            llm = PacedLlm(ttft_s, tokens_per_s)
            companion = Companion(
                persona=PersonaSource("en"),
                router=LlmRouter(llm, None, no_primary_reason=""),
                memory=Memory(store, MemoryConfig(history_turns=0, recall_turns=0)),
                speech=SpeechOut(voice, chunk_ms=100),
            )
            for i in range(runs):
                turn = TurnRequestData(f"t{i}", "bench", "bench", "device", "Why is the moon big?")
                started = time.perf_counter()
                first_token = first_audio = 0.0
                async for event in companion.reply(turn):
                    kind = event.WhichOneof("kind")
                    if kind == "text_delta" and not first_token:
                        first_token = time.perf_counter()
                    if kind == "audio" and not first_audio:
                        first_audio = time.perf_counter()
                results["token_ours"].append(first_audio - first_token)
                results["start_ours"].append(first_audio - started)

                started = time.perf_counter()
                words = [w async for w in llm.stream(Prompt("", (), ""))]
                first_token = started + ttft_s
                await asyncio.to_thread(voice.synthesize, "".join(words))
                results["token_naive"].append(time.perf_counter() - first_token)
                results["start_naive"].append(time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--ttft", type=float, default=0.4, help="simulated LLM time to first token, s")
    parser.add_argument("--tokens-per-s", type=float, default=25.0, help="simulated LLM speed, words/s")
    args = parser.parse_args()
    setup_logging("WARNING")
    print("building or loading Whisper base and a medium Piper voice (random weights, real sizes) ...")
    whisper_base()
    piper_medium()

    print(f"\n1. release -> final transcript, 5 s utterance of three phrases (medians of {args.runs})")
    right_away = release_to_transcript(args.runs, trailing=0.15)
    report("released right after the last word", *right_away)
    after_pause = release_to_transcript(args.runs, trailing=0.6)
    report("released 0.6 s after the last word", *after_pause)
    fit = release_to_transcript(args.runs, trailing=0.15, window="fit")
    report('right after the last word, stt.encoder_window "fit"', *fit)

    print(f"\n2. LLM at {args.tokens_per_s:g} words/s, {args.ttft:g} s to the first; medium Piper voice")
    stages = asyncio.run(brain_to_audio(args.runs, args.ttft, args.tokens_per_s))
    report("first text token -> first audio chunk", stages["token_ours"], stages["token_naive"])

    print("\n3. release -> first audio (1 + the brain's request -> first audio)")
    variants = (
        ("released right after the last word", right_away),
        ("released after a pause", after_pause),
        ('right after the last word, "fit" window', fit),
    )
    for label, stt in variants:
        ours = [statistics.median(stt[0]) + s for s in stages["start_ours"]]
        naive = [statistics.median(stt[1]) + s for s in stages["start_naive"]]
        report(label, ours, naive)


if __name__ == "__main__":
    main()
