"""Speech recognition on real weights: word and character error rates and time per clip, per setting.

For each Whisper model (tiny, base), encoder window ("full": padded to 30 s; "fit": a short window with a
loop guard that falls back to "full") and language setting (fixed; auto among ["ko", "en"], Plush's default;
auto among all 99), on two sets the bench makes itself:

- English: 24 short child-style questions spoken by the real Piper voice en_US joe medium, with varied
  `length_scale` and `noise_scale`, 0.16 s of silence either side (as the VAD pads a segment).
- Korean: 12 short sentences spoken by espeak-ng's `ko` voice (a robot voice: Whisper base understands it
  poorly, so its CER is an upper bound; `apt-get install espeak-ng`; skipped without it).

Plus the baseline, faster-whisper's own `transcribe` (what Plush called before: two encoder passes when it
detects the language), release -> final transcript through streaming STT for the 2-3.5 s English questions,
and the Korean round trip of the current voice (Piper joe reading Korean, heard by Whisper base as Korean).

Time is the median per clip of `Transcriber.transcribe` (features, encoder, language detection, decoding);
"x full" divides it by the full window's median for the same model and language setting in this run.

    .venv/bin/pip install -e '.[bench]'      # jiwer
    .venv/bin/python bench/speech_quality.py --models-dir /tmp/plush-real-store
    .venv/bin/python bench/speech_quality.py --quick     # a few clips, base only: checks the script works
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from plush.config import SttConfig, load_config  # noqa: E402
from plush.logs import setup_logging  # noqa: E402
from plush.voice_models.audio import WHISPER_RATE, float_to_pcm16, pcm16_to_float  # noqa: E402
from plush.voice_models.model_store import ModelStore  # noqa: E402
from plush.voice_models.speech_scoring import normalise  # noqa: E402
from plush.voice_models.streaming_stt import StreamingStt  # noqa: E402
from plush.voice_models.stt import SttOptions, Transcriber  # noqa: E402
from plush.voice_models.vad import SileroVad  # noqa: E402

ENGLISH = (
    "Why is the sky blue?",
    "What do bees eat?",
    "Can you tell me a story about a dragon?",
    "How many legs does a spider have?",
    "Where do rainbows come from?",
    "Do fish sleep at night?",
    "What is your favorite color?",
    "Can we play a game now?",
    "Why do cats purr?",
    "How far away is the moon?",
    "Is it going to rain tomorrow?",
    "Who is the tallest person in the world?",
    "I am hungry.",
    "Sing me a song please.",
    "What sound does a cow make?",
    "Why do I have to go to bed when it is still light outside?",
    "My friend Emma has a puppy and I want one too, can I have a puppy?",
    "What would happen if the sun went away forever?",
    "How do airplanes stay up in the sky without falling down?",
    "Tell me a joke about a penguin and a banana.",
    "Can dinosaurs come back to life if we find their bones?",
    "Why does my tummy make noises when I am hungry?",
    "Good night, see you tomorrow.",
    "What is bigger, an elephant or a whale?",
)
KOREAN = (
    "안녕! 나는 모모야.",
    "오늘 기분이 어때?",
    "하늘은 왜 파란색이야?",
    "우리 같이 놀자.",
    "배가 고파요.",
    "공룡은 어디에 살았어?",
    "노래 불러 줘.",
    "잘 자, 내일 또 만나.",
    "고양이는 왜 야옹 하고 울어?",
    "엄마는 언제 와?",
    "재미있는 이야기 해 줘.",
    "나는 딸기를 좋아해.",
)
KOREAN_ROUND_TRIP = ("안녕! 나는 모모야. 오늘 기분이 어때?", "우리 같이 노래 부를까?", "잘 자, 내일 또 만나.")
PAD_S = 0.16
"""Silence either side of a clip: what the VAD keeps around a segment (VadOptions.pad_ms)."""
SETTINGS = {"fixed": "fixed language", "auto-ko-en": 'auto, ["ko", "en"]', "auto-any": "auto, any of 99"}


@dataclass(frozen=True)
class Clip:
    text: str
    language: str
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return self.audio.size / WHISPER_RATE


@dataclass(frozen=True)
class Row:
    """One model, window and language setting on one set."""

    model: str
    window: str
    setting: str
    wer: float
    cer: float
    median_s: float
    right_language: float
    fallbacks: int
    clips: int
    texts: tuple[str, ...]


def to_16k(pcm: bytes, rate: int) -> np.ndarray:
    import soxr

    audio = soxr.resample(pcm16_to_float(pcm), rate, WHISPER_RATE).astype(np.float32)
    pad = np.zeros(int(PAD_S * WHISPER_RATE), dtype=np.float32)
    return np.concatenate([pad, audio, pad])


def piper_clips(voice_path: Path, texts: tuple[str, ...], language: str, voicings: int = 1) -> list[Clip]:
    """Each text spoken by the Piper voice `voicings` times, with some variety in rate and expressiveness."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(voice_path)
    clips = []
    for take in range(voicings):
        for i, text in enumerate(texts):
            n = i + take
            config = SynthesisConfig(length_scale=(0.9, 1.0, 1.1, 1.2)[n % 4], noise_scale=(0.5, 0.667, 0.8)[n % 3])
            pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, config))
            clips.append(Clip(text, language, to_16k(pcm, voice.config.sample_rate)))
    return clips


def espeak_clips(texts: tuple[str, ...], voice: str) -> list[Clip] | None:
    """Each text spoken by espeak-ng (None when it is not installed), at varied speed and pitch."""
    if shutil.which("espeak-ng") is None:
        return None
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "clip.wav"
        for i, text in enumerate(texts):
            speed, pitch = (120, 135, 150)[i % 3], (40, 50, 60)[i % 3]
            command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav_path), text]
            subprocess.run(command, check=True, capture_output=True)
            with wave.open(str(wav_path)) as wav:
                pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
            clips.append(Clip(text, voice, to_16k(pcm, rate)))
    return clips


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """WER over all words of the set; CER over its characters without spaces (Korean spacing varies)."""
    import jiwer

    refs, hyps = [normalise(t) for t in refs], [normalise(t) for t in hyps]
    wer = jiwer.wer(refs, hyps)
    cer = jiwer.cer([r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps])
    return float(wer), float(cer)


def options(setting: str, language: str, window: str) -> SttOptions:
    languages = {"fixed": (), "auto-ko-en": ("ko", "en"), "auto-any": ()}[setting]
    return SttOptions(language=language if setting == "fixed" else None, languages=languages, encoder_window=window)


Transcribe = Callable[[np.ndarray], tuple[str, str, str]]
"""audio -> (text, language, window used)."""


@dataclass(frozen=True)
class Contender:
    """One way of transcribing, under its table labels."""

    model: str
    window: str
    setting: str
    transcribe: Transcribe


def measure(contenders: list[Contender], clips: list[Clip]) -> list[Row]:
    """Every clip through every contender in turn (after a warm-up each), so a busy machine slows all alike."""
    for contender in contenders:
        contender.transcribe(clips[0].audio)
    hyps: list[list[str]] = [[] for _ in contenders]
    languages: list[list[str]] = [[] for _ in contenders]
    times: list[list[float]] = [[] for _ in contenders]
    fallbacks = [0 for _ in contenders]
    for clip in clips:
        for i, contender in enumerate(contenders):
            started = time.perf_counter()
            text, language, used = contender.transcribe(clip.audio)
            times[i].append(time.perf_counter() - started)
            hyps[i].append(text)
            languages[i].append(language)
            fallbacks[i] += contender.window == "fit" and used != "fit"
    return [
        score(c.model, c.window, c.setting, clips, hyps=hyps[i], languages=languages[i], times=times[i],
              fallbacks=fallbacks[i])
        for i, c in enumerate(contenders)
    ]  # fmt: skip


def score(
    model: str,
    window: str,
    setting: str,
    clips: list[Clip],
    *,
    hyps: list[str],
    languages: list[str],
    times: list[float],
    fallbacks: int = 0,
) -> Row:
    wer, cer = error_rates([c.text for c in clips], hyps)
    right = sum(lang == clip.language for lang, clip in zip(languages, clips, strict=True)) / len(clips)
    row = Row(model, window, setting, wer, cer, statistics.median(times), right, fallbacks, len(clips), tuple(hyps))
    print(f"  {model}, {window}, {setting}: WER {wer:.1%} CER {cer:.1%} {row.median_s * 1000:.0f} ms", file=sys.stderr)
    return row


def plush_transcriber(model: Path, opts: SttOptions) -> tuple[Transcribe, bool]:
    """Plush's Transcriber, and whether the model is multilingual."""
    transcriber = Transcriber(model, options=opts)

    def run(audio: np.ndarray) -> tuple[str, str, str]:
        result = transcriber.transcribe(audio)
        return result.text, result.language, result.window

    return run, transcriber.multilingual


def faster_whisper_transcribe(model: Path, language: str | None) -> Transcribe:
    """The baseline: faster-whisper's own path, as Plush called it before (a second encoder pass to detect)."""
    from faster_whisper import WhisperModel

    whisper = WhisperModel(str(model), compute_type="int8", local_files_only=True)

    def run(audio: np.ndarray) -> tuple[str, str, str]:
        segments, info = whisper.transcribe(
            audio, language=language, beam_size=1, temperature=0.0, condition_on_previous_text=False,
            without_timestamps=True, max_new_tokens=128, vad_filter=False,
        )  # fmt: skip
        return "".join(s.text for s in segments).strip(), str(info.language), "full"

    return run


def release_to_text(model: Path, windows: tuple[str, ...], clips: list[Clip], vad: SileroVad) -> list[Row]:
    """Streaming STT with Plush's default language setting: the clip is fed while the button is held, the
    button goes up 0.15 s after the last word, and `finish()` (the open phrase's decode) is timed. The windows
    take turns on each clip."""
    streams = [StreamingStt(Transcriber(model, options=options("auto-ko-en", "en", w)), vad) for w in windows]
    tail = np.zeros(int(0.15 * WHISPER_RATE), dtype=np.float32)
    times: list[list[float]] = [[] for _ in windows]
    hyps: list[list[str]] = [[] for _ in windows]
    languages: list[list[str]] = [[] for _ in windows]
    for clip in [clips[0], *clips]:  # the first is a warm-up
        pcm = float_to_pcm16(np.concatenate([clip.audio[: -int(PAD_S * WHISPER_RATE)], tail]))
        for i, stt in enumerate(streams):
            stream = stt.begin()
            for offset in range(0, len(pcm), 1280):  # 40 ms blocks, as the microphone delivers them
                stream.feed(pcm[offset : offset + 1280])
            time.sleep(0.3)  # the VAD catches up with the microphone while the button is still held
            started = time.perf_counter()
            result = stream.finish()
            times[i].append(time.perf_counter() - started)
            hyps[i].append(result.text)
            languages[i].append(result.language)
    return [
        score("base", w, "release -> text", clips, hyps=hyps[i][1:], languages=languages[i][1:], times=times[i][1:])
        for i, w in enumerate(windows)
    ]


def table(rows: list[Row]) -> None:
    full = {(r.model, r.setting): r.median_s for r in rows if r.window == "full"}
    print("| model | window | language | WER | CER | median per clip | x full | right language | fit fell back |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = full.get((r.model, r.setting))
        ratio = f"{r.median_s / base:.2f}" if base else ""
        fell = f"{r.fallbacks}/{r.clips}" if r.window == "fit" else ""
        print(
            f"| {r.model} | {r.window} | {SETTINGS.get(r.setting, r.setting)} | {r.wer:.1%} | {r.cer:.1%} "
            f"| {r.median_s * 1000:.0f} ms | {ratio} | {r.right_language:.0%} | {fell} |"
        )


def run_set(
    clips: list[Clip], models: dict[str, Path], language: str, settings: list[str], *, baseline: bool
) -> list[Row]:
    contenders = []
    for name, path in models.items():
        short = name.removeprefix("whisper-")
        for window in ("full", "fit"):
            for setting in settings:
                transcribe, multilingual = plush_transcriber(path, options(setting, language, window))
                if not multilingual and setting != "fixed":
                    continue  # an English-only model has no language to detect
                contenders.append(Contender(short, window, setting if multilingual else "fixed", transcribe))
        if baseline and short == "base" and "auto-any" in settings:
            transcribe = faster_whisper_transcribe(path, None)
            contenders.append(Contender(short, "faster-whisper transcribe", "auto-any", transcribe))
    return measure(contenders, clips)


def machine() -> str:
    """CPU model, cores and load: timings here mean little without them."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or "unknown CPU"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"


SETS = ("english", "release", "korean", "round-trip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, help="the model store (default: [models] dir of the config)")
    parser.add_argument(
        "--whisper", default="whisper-tiny.en,whisper-base", help="Whisper names or paths, comma-separated"
    )
    parser.add_argument("--voice", default="piper-en-joe-medium", help="the Piper voice for English: name or .onnx")
    parser.add_argument("--sets", default=",".join(SETS), help=f"which parts to run (default: {','.join(SETS)})")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"language settings (default: {','.join(SETTINGS)})"
    )
    parser.add_argument("--voicings", type=int, default=1, help="English: each question spoken this many ways")
    parser.add_argument("--quick", action="store_true", help="four clips per set, base only: a smoke run")
    args = parser.parse_args()
    setup_logging("WARNING")
    sets, settings = set(args.sets.split(",")), args.settings.split(",")
    store = ModelStore(args.models_dir) if args.models_dir else ModelStore.from_config(load_config().models)
    names = ["whisper-base"] if args.quick else args.whisper.split(",")
    models = {name: store.resolve(name, "stt") for name in names}
    base = models.get("whisper-base")
    voice = store.resolve(args.voice, "tts")
    count = 4 if args.quick else None

    command = "python bench/speech_quality.py " + " ".join(sys.argv[1:])
    print(f"# Speech quality on real weights\n\n`{command}`\n\n{machine()}, {time.strftime('%Y-%m-%d')}\n")
    english = piper_clips(voice, ENGLISH[:count], "en", args.voicings)
    if "english" in sets:
        seconds = [c.seconds for c in english]
        print(f"## English: {len(english)} questions, {min(seconds):.1f}-{max(seconds):.1f} s (Piper {voice.stem})\n")
        table(run_set(english, models, "en", settings, baseline=True))

    if "release" in sets and base is not None:
        phrases = [c for c in english if 2.0 <= c.seconds <= 3.8] or english
        print(f"\n## Release -> final transcript: {len(phrases)} English questions of 2-3.5 s, streaming STT\n")
        vad = SileroVad()
        table(release_to_text(base, ("full", "fit"), phrases, vad))

    korean = espeak_clips(KOREAN[:count], "ko") if "korean" in sets else []
    if korean is None:
        print("\n## Korean: skipped (espeak-ng is not installed: apt-get install espeak-ng)")
    elif korean:
        multilingual = {n: p for n, p in models.items() if plush_transcriber(p, SttOptions())[1]}
        print(f"\n## Korean: {len(korean)} sentences spoken by espeak-ng's ko voice\n")
        if len(multilingual) < len(models):
            skipped = ", ".join(sorted(set(models) - set(multilingual)))
            print(f"({skipped}: English-only model, not run)\n")
        table(run_set(korean, multilingual, "ko", settings, baseline=False))

    if "round-trip" in sets and base is not None:
        trip = piper_clips(voice, KOREAN_ROUND_TRIP, "ko")
        window = SttConfig().encoder_window
        transcribe, _ = plush_transcriber(base, options("fixed", "ko", window))
        (row,) = measure([Contender("base", window, "fixed", transcribe)], trip)
        print(f"\n## Korean round trip: Piper {voice.stem} reading Korean, heard by Whisper base (ko, {window})\n")
        print(f"CER {row.cer:.1%} over {len(trip)} sentences\n")
        for clip, text in zip(trip, row.texts, strict=True):
            print(f"- {clip.text} -> {text}")
    print(f"\n{machine()} at the end", file=sys.stderr)


if __name__ == "__main__":
    main()
