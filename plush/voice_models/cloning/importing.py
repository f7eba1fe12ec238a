"""A voice dataset from audio the owner already has: a folder of recordings, or their Telegram voice notes.

Each file is decoded with PyAV (WAV, OGG/Opus, MP3, M4A, FLAC ...), cut at pauses with Silero VAD into clips of
a few seconds (short pieces merged with their neighbours, long speech cut), and each clip transcribed with
Whisper. The clips go to `clips/` at 22,050 Hz, and one line per clip to `review.tsv`, a tab-separated file the
owner opens in any editor or spreadsheet: `keep` (yes/no) and `text` (what was really said) are theirs to
correct; `prepare` takes only kept clips, with the corrected text. Whisper's first guess is a draft, never
trusted blindly: a voice trained on wrong text mumbles.

Importing again into the same folder adds only files it has not seen (by path), and never rewrites a line the
owner may have edited. The review file is rewritten after every source file, so an interrupted import keeps what
it finished.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plush.errors import AudioFormatError, PlushError
from plush.logs import get_logger
from plush.voice_models.audio import (
    WHISPER_RATE,
    FloatAudio,
    float_to_pcm16,
    pcm16_to_float,
    read_audio_file,
    write_wav,
)
from plush.voice_models.cloning import PIPER_RATE
from plush.voice_models.cloning.recording import write_atomically
from plush.voice_models.stt import Transcriber
from plush.voice_models.vad import SileroVad, SpeechSegmenter, VadOptions

log = get_logger(__name__)

REVIEW_FILE = "review.tsv"
IMPORT_FILE = "import.json"
COLUMNS = ("keep", "clip", "seconds", "text", "source", "note")
AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".flac", ".webm"})
REVIEW_HEADER = (
    "# Review the clips: set keep to no to leave a clip out, and correct text to exactly what was said.\n"
    "# Then run: plush voice prepare THIS_FOLDER --out DATASET. Lines starting with # are ignored.\n"
)
_YES = {"yes", "y", "1", "true", "keep"}
_NO = {"no", "n", "0", "false", "drop"}


class ClipImportError(PlushError):
    """Audio cannot be imported, or the review file cannot be read."""


@dataclass(frozen=True)
class ImportOptions:
    """How recordings are cut into clips."""

    language: str | None = None
    """Whisper language code of the speech; None detects it (among `[stt] languages`)."""
    min_silence_ms: int = 500
    """A pause this long ends a clip."""
    merge_below_s: float = 2.0
    """A clip shorter than this is joined to the next one when the pause between them is short."""
    max_gap_s: float = 1.5
    """The longest pause kept inside a merged clip."""
    max_clip_s: float = 12.0
    """Longest clip; longer speech is cut (a trainer batch holds a few seconds per clip best)."""
    min_clip_s: float = 1.0
    """Clips shorter than this are listed but not kept."""


@dataclass(frozen=True)
class ReviewRow:
    """One clip in the review file."""

    keep: bool
    clip: str
    """Path relative to the import folder."""
    seconds: float
    text: str
    source: str
    note: str = ""


@dataclass
class ImportResult:
    """What one import run added."""

    files: int = 0
    clips: int = 0
    kept: int = 0
    seconds: float = 0.0
    already_imported: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """Source files that could not be read, with the reason."""
    language: str | None = None


def find_audio(paths: Iterable[Path]) -> list[Path]:
    """Audio files among `paths` (folders are searched recursively), sorted, each once."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise ClipImportError(f"no such file or folder: {path}")
    return list(dict.fromkeys(p.resolve() for p in found))


def telegram_voice_notes(data_home: Path) -> Path:
    """Where the Telegram bridge keeps the voice notes owners sent (when `[telegram]` is told to keep them)."""
    return data_home / "telegram" / "voice_notes"


def cut_points(segments: list[tuple[int, int]], rate: int, options: ImportOptions) -> list[tuple[int, int]]:
    """Speech segments (samples at `rate`) merged into clips: short ones joined across short pauses."""
    clips: list[tuple[int, int]] = []
    max_len, gap_len = options.max_clip_s * rate, options.max_gap_s * rate
    for start, end in segments:
        if clips:
            last_start, last_end = clips[-1]
            short = last_end - last_start < options.merge_below_s * rate or end - start < options.merge_below_s * rate
            if short and start - last_end <= gap_len and end - last_start <= max_len:
                clips[-1] = (last_start, end)
                continue
        clips.append((start, end))
    return clips


def read_review(folder: Path) -> list[ReviewRow]:
    """The review file of an import folder, as the owner left it; a bad line is an error naming it."""
    path = folder / REVIEW_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClipImportError(f"cannot read the review file {path}: {exc}") from exc
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.startswith("#")]
    if not numbered:
        return []
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in numbered)), delimiter="\t")
    missing = [c for c in ("keep", "clip", "text") if c not in (reader.fieldnames or [])]
    if missing:
        raise ClipImportError(f"{path}: the header line lacks the column(s) {', '.join(missing)}")
    rows: list[ReviewRow] = []
    for (number, _), row in zip(numbered[1:], reader, strict=False):
        keep = (row.get("keep") or "").strip().lower()
        if keep not in _YES | _NO:
            raise ClipImportError(f"{path} line {number}: keep must be yes or no, not {row.get('keep')!r}")
        try:
            seconds = float(row.get("seconds") or 0)
        except ValueError:
            seconds = 0.0
        rows.append(
            ReviewRow(
                keep=keep in _YES,
                clip=(row.get("clip") or "").strip(),
                seconds=seconds,
                text=" ".join((row.get("text") or "").split()),
                source=row.get("source") or "",
                note=row.get("note") or "",
            )
        )
    return rows


def write_review(folder: Path, rows: list[ReviewRow]) -> None:
    buffer = io.StringIO()
    buffer.write(REVIEW_HEADER)
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        keep = "yes" if row.keep else "no"
        writer.writerow([keep, row.clip, f"{row.seconds:.2f}", row.text, row.source, row.note])
    write_atomically(folder / REVIEW_FILE, buffer.getvalue().encode("utf-8"))


def import_language(folder: Path) -> str | None:
    """The language an import folder's speech is in (as given, or as Whisper detected most often)."""
    try:
        return json.loads((folder / IMPORT_FILE).read_text(encoding="utf-8")).get("language")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def import_audio(
    files: list[Path],
    folder: Path,
    transcriber: Transcriber,
    vad: SileroVad,
    *,
    options: ImportOptions | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> ImportResult:
    """Cut, transcribe and list `files` in the import `folder` (created if needed); see the module doc."""
    options = options or ImportOptions()
    folder.mkdir(parents=True, exist_ok=True)
    rows = read_review(folder) if (folder / REVIEW_FILE).exists() else []
    seen = {row.source for row in rows}
    languages: Counter[str] = Counter()
    result = ImportResult()
    for path in files:
        if on_file is not None:
            on_file(path)
        if str(path) in seen:
            result.already_imported += 1
            continue
        try:
            audio = pcm16_to_float(read_audio_file(path, PIPER_RATE))
        except AudioFormatError as exc:
            result.failed[str(path)] = str(exc)
            log.warning("import_unreadable", source=str(path), error=str(exc))
            continue
        new_rows = _import_one(
            path, audio, folder, transcriber=transcriber, vad=vad, options=options, languages=languages
        )
        rows.extend(new_rows)
        seen.add(str(path))
        result.files += 1
        result.clips += len(new_rows)
        result.kept += sum(row.keep for row in new_rows)
        result.seconds += sum(row.seconds for row in new_rows if row.keep)
        write_review(folder, rows)
    result.language = options.language or _merge_language(folder, languages)
    if result.language:
        write_atomically(folder / IMPORT_FILE, json.dumps({"language": result.language}).encode("utf-8"))
    if not rows:
        write_review(folder, rows)
    return result


def _merge_language(folder: Path, detected: Counter[str]) -> str | None:
    earlier = import_language(folder)
    if earlier:
        detected[earlier] += 1
    return detected.most_common(1)[0][0] if detected else None


def _import_one(
    path: Path,
    audio: FloatAudio,
    folder: Path,
    *,
    transcriber: Transcriber,
    vad: SileroVad,
    options: ImportOptions,
    languages: Counter[str],
) -> list[ReviewRow]:
    import soxr

    audio16k = np.asarray(soxr.resample(audio, PIPER_RATE, WHISPER_RATE), dtype=np.float32)
    segmenter = SpeechSegmenter(
        vad, VadOptions(min_silence_ms=options.min_silence_ms, pad_ms=150, max_segment_s=options.max_clip_s)
    )
    segments = [(s.start, s.end) for s in segmenter.feed(audio16k) + segmenter.finish(len(audio16k))]
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:6]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")[:40] or "clip"
    rows: list[ReviewRow] = []
    scale = PIPER_RATE / WHISPER_RATE
    for number, (start, end) in enumerate(cut_points(segments, WHISPER_RATE, options), 1):
        relative = f"clips/{stem}-{tag}-{number:03d}.wav"
        piece = audio[int(start * scale) : int(end * scale)]
        write_wav(folder / relative, float_to_pcm16(piece), PIPER_RATE)
        seconds = len(piece) / PIPER_RATE
        heard = transcriber.transcribe(audio16k[start:end], language=options.language)
        languages[heard.language] += 1
        note = ""
        if not heard.text:
            note = "no words heard"
        elif seconds < options.min_clip_s:
            note = "too short"
        rows.append(
            ReviewRow(keep=not note, clip=relative, seconds=seconds, text=heard.text, source=str(path), note=note)
        )
    log.info("import_file", source=str(path), clips=len(rows))
    return rows
