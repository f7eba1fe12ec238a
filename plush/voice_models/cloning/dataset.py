"""`prepare`: recorded takes and reviewed imports -> the dataset folder Piper's trainer reads, with a report.

The folder holds `wavs/<id>.wav` (22,050 Hz, mono, 16-bit, each clip loudness-normalised to the same target so
the voice does not learn that some sentences are quiet), `metadata.csv` in LJSpeech form (`id|text`, no header,
UTF-8) and `report.json`: how many minutes and clips, their lengths, every clip left out and why, and whether
there is enough to train, with the thresholds used. Loudness is measured with pyloudnorm (ITU-R BS.1770), a kept
library, then a plain gain is applied, lowered where a clip's peak would pass `peak_dbfs`.

Sources are recording-session folders (`session.json`) and import folders (`review.tsv`), any number of each, in
one language. Preparing again into the same folder replaces the dataset there; a folder that holds anything else
is refused, so no one's files are overwritten by a typo.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plush.errors import AudioFormatError, PlushError
from plush.logs import get_logger
from plush.voice_models.audio import float_to_pcm16, pcm16_to_float, read_audio_file, write_wav
from plush.voice_models.cloning import PIPER_RATE
from plush.voice_models.cloning.importing import REVIEW_FILE, import_language, read_review
from plush.voice_models.cloning.prompts import ESPEAK_VOICES
from plush.voice_models.cloning.recording import STATE_FILE, RecordingSession, write_atomically
from plush.voice_models.speech_scoring import normalise

log = get_logger(__name__)

METADATA_FILE = "metadata.csv"
REPORT_FILE = "report.json"
WAVS = "wavs"


class DatasetError(PlushError):
    """The dataset cannot be prepared from these sources or into this folder."""


@dataclass(frozen=True)
class PrepareOptions:
    """What makes a clip usable, the loudness target, and how much is enough to train."""

    loudness_lufs: float = -23.0
    """Every clip is brought to this integrated loudness."""
    peak_dbfs: float = -1.0
    """...unless its peak would pass this, then less."""
    min_clip_s: float = 0.8
    max_clip_s: float = 15.0
    max_clipped: float = 0.001
    """Fraction of samples at full scale above which a clip is rejected as clipped."""
    min_loudness_lufs: float = -50.0
    """Quieter clips are silence or a microphone that was off."""
    max_chars_per_s: float = 30.0
    """More text per second than anyone speaks: the text belongs to another clip, or the audio was cut."""
    min_minutes: float = 10.0
    """Least speech to fine-tune a voice from a base voice."""
    min_clips: int = 100
    recommended_minutes: float = 30.0
    """Where the cloned voice starts to sound like the owner in every sentence, not only in most."""


@dataclass(frozen=True)
class SourceClip:
    """A clip to consider: its audio file, its text, and where it came from."""

    id: str
    audio: Path
    text: str
    source: str


def collect(sources: list[Path]) -> tuple[list[SourceClip], list[dict[str, Any]], set[str]]:
    """The clips of every source folder, the clips the owner left out, and the sources' languages."""
    clips: list[SourceClip] = []
    left_out: list[dict[str, Any]] = []
    languages: set[str] = set()
    for folder in sources:
        if (folder / STATE_FILE).is_file():
            session = RecordingSession.load(folder)
            languages.add(session.language)
            for prompt_id, take in session.takes.items():
                clips.append(SourceClip(prompt_id, folder / take["file"], take["text"], str(folder)))
        elif (folder / REVIEW_FILE).is_file():
            if language := import_language(folder):
                languages.add(language)
            for row in read_review(folder):
                clip_id = Path(row.clip).stem
                if row.keep:
                    clips.append(SourceClip(clip_id, folder / row.clip, row.text, str(folder)))
                else:
                    reason = "left out in the review file" + (f" ({row.note})" if row.note else "")
                    left_out.append(
                        {"id": clip_id, "audio": str(folder / row.clip), "source": str(folder), "reasons": [reason]}
                    )
        else:
            raise DatasetError(
                f"{folder} is neither a recording session ({STATE_FILE}) nor an import folder ({REVIEW_FILE})"
            )
    return clips, left_out, languages


def clean_text(text: str) -> str:
    """The text as metadata.csv can hold it: one line, no `|` (the column separator)."""
    return " ".join(text.replace("|", " ").split())


def clip_problems(audio: np.ndarray[Any, Any], text: str, loudness: float, options: PrepareOptions) -> list[str]:
    """Why a clip cannot go into the dataset (empty when it can)."""
    seconds = len(audio) / PIPER_RATE
    problems = []
    if not text:
        problems.append("no text: write what was said in the review file")
    if seconds < options.min_clip_s:
        problems.append(f"too short ({seconds:.1f} s; at least {options.min_clip_s} s)")
    if seconds > options.max_clip_s:
        problems.append(f"too long ({seconds:.0f} s; at most {options.max_clip_s:.0f} s): cut it at a pause")
    clipped = float(np.mean(np.abs(audio) >= 0.995)) if audio.size else 0.0
    if clipped > options.max_clipped:
        problems.append(f"clipped ({clipped:.1%} of samples at full scale): record it again, softer")
    if not loudness > options.min_loudness_lufs:
        problems.append(f"silent or nearly ({loudness:.0f} LUFS)")
    chars = len(normalise(text).replace(" ", ""))
    if text and seconds and chars / seconds > options.max_chars_per_s:
        problems.append(f"the text is too long for {seconds:.1f} s of audio: check that it belongs to this clip")
    return problems


def prepare(
    sources: list[Path],
    out: Path,
    *,
    language: str | None = None,
    options: PrepareOptions | None = None,
    on_clip: Callable[[SourceClip], None] | None = None,
) -> dict[str, Any]:
    """Write the dataset for `sources` into `out` and return its report (also in `out/report.json`)."""
    options = options or PrepareOptions()
    _check_out(out, sources)
    clips, rejected, languages = collect(sources)
    if language is None:
        if len(languages) > 1:
            raise DatasetError(
                f"the sources are in different languages ({', '.join(sorted(languages))}): prepare one dataset "
                "per language, or pass --language if they are really the same"
            )
        if not languages:
            raise DatasetError("cannot tell the language of these sources: pass --language (en, ko, ...)")
        language = languages.pop()
    try:
        import pyloudnorm
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise DatasetError("preparing a dataset needs pyloudnorm: pip install 'plush[voice]'") from exc

    meter = pyloudnorm.Meter(PIPER_RATE)
    staging = out / f".{WAVS}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lines: list[str] = []
    lengths: list[float] = []
    limited = 0
    used: set[str] = set()
    for clip in clips:
        if on_clip is not None:
            on_clip(clip)
        text = clean_text(clip.text)
        entry = {"id": clip.id, "audio": str(clip.audio), "source": clip.source}
        try:
            audio = pcm16_to_float(read_audio_file(clip.audio, PIPER_RATE))
        except AudioFormatError as exc:
            rejected.append({**entry, "reasons": [f"unreadable audio: {exc}"]})
            continue
        loudness = _loudness(meter, audio)
        problems = clip_problems(audio, text, loudness, options)
        if problems:
            rejected.append({**entry, "reasons": problems})
            continue
        normalised, was_limited = _normalise(audio, loudness, options)
        limited += was_limited
        clip_id = _unique(clip.id, used)
        write_wav(staging / f"{clip_id}.wav", float_to_pcm16(normalised), PIPER_RATE)
        lines.append(f"{clip_id}|{text}\n")
        lengths.append(len(audio) / PIPER_RATE)
    shutil.rmtree(out / WAVS, ignore_errors=True)
    staging.rename(out / WAVS)
    write_atomically(out / METADATA_FILE, "".join(lines).encode("utf-8"))
    report = _report(language, lengths, rejected=rejected, limited=limited, sources=sources, options=options)
    write_atomically(out / REPORT_FILE, json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8"))
    log.info("dataset_prepared", out=str(out), clips=len(lengths), rejected=len(rejected))
    return report


def _check_out(out: Path, sources: list[Path]) -> None:
    resolved = out.resolve()
    for source in sources:
        if resolved == source.resolve() or source.resolve() in resolved.parents:
            raise DatasetError(f"write the dataset outside its sources ({out} is inside {source})")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise DatasetError(f"{out} already holds files that are not a Plush dataset: choose an empty or new folder")


def _loudness(meter: Any, audio: np.ndarray[Any, Any]) -> float:
    if len(audio) < meter.block_size * PIPER_RATE or not np.any(audio):
        return float("-inf")
    return float(meter.integrated_loudness(audio.astype(np.float64)))


def _normalise(
    audio: np.ndarray[Any, Any], loudness: float, options: PrepareOptions
) -> tuple[np.ndarray[Any, Any], bool]:
    gain = 10 ** ((options.loudness_lufs - loudness) / 20)
    peak = float(np.max(np.abs(audio))) * gain
    ceiling = 10 ** (options.peak_dbfs / 20)
    limited = peak > ceiling
    if limited:
        gain *= ceiling / peak
    return audio * gain, limited


def _unique(clip_id: str, used: set[str]) -> str:
    candidate, n = clip_id, 1
    while candidate in used:
        n += 1
        candidate = f"{clip_id}_{n}"
    used.add(candidate)
    return candidate


def _report(
    language: str,
    lengths: list[float],
    *,
    rejected: list[dict[str, Any]],
    limited: int,
    sources: list[Path],
    options: PrepareOptions,
) -> dict[str, Any]:
    seconds = sum(lengths)
    minutes = seconds / 60
    enough = minutes >= options.min_minutes and len(lengths) >= options.min_clips
    if enough and minutes >= options.recommended_minutes:
        advice = "enough to train"
    elif enough:
        advice = f"enough to train; {options.recommended_minutes:.0f} minutes or more will sound more like you"
    else:
        advice = (
            f"record more: {minutes:.1f} of at least {options.min_minutes:.0f} minutes and {len(lengths)} of at "
            f"least {options.min_clips} clips"
        )
    return {
        "format": "piper-ljspeech",
        "language": language,
        "espeak_voice": ESPEAK_VOICES.get(language, language),
        "sample_rate": PIPER_RATE,
        "clips": len(lengths),
        "seconds": round(seconds, 2),
        "minutes": round(minutes, 2),
        "clip_seconds": {
            "min": round(min(lengths), 2) if lengths else 0.0,
            "max": round(max(lengths), 2) if lengths else 0.0,
            "mean": round(statistics.fmean(lengths), 2) if lengths else 0.0,
            "median": round(statistics.median(lengths), 2) if lengths else 0.0,
        },
        "loudness_lufs": options.loudness_lufs,
        "peak_limited": limited,
        "rejected": rejected,
        "enough_to_train": enough,
        "thresholds": {
            "min_minutes": options.min_minutes,
            "min_clips": options.min_clips,
            "recommended_minutes": options.recommended_minutes,
        },
        "advice": advice,
        "sources": [str(s) for s in sources],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
