"""A guided recording session: one sentence at a time, each take checked, kept, redone or skipped; resumable.

A session is a folder: `session.json` (the language, its own copy of the prompts, and every kept take with its
checks) and `takes/<prompt id>.wav` (the take trimmed to the speech, at the microphone's rate). The state is
written after every take, each file through a temporary name and an atomic rename, so Ctrl+C, a crash or a pulled
plug loses at most the take being recorded; running the same command again goes on at the first sentence
without a take.

`run_session` drives the session through a `SessionUI` (what the owner sees and presses). The terminal UI lives
in the CLI; tests drive the very same loop with a scripted UI, through the real microphone path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from plush.errors import PlushError
from plush.logs import get_logger
from plush.voice_models.audio import FloatAudio, float_to_pcm16, write_wav
from plush.voice_models.cloning.audio_checks import CheckLimits, TakeCheck, check_take, check_words
from plush.voice_models.cloning.microphone import Microphone
from plush.voice_models.cloning.prompts import Prompt
from plush.voice_models.stt import Transcriber
from plush.voice_models.vad import SileroVad

log = get_logger(__name__)

STATE_FILE = "session.json"
STATE_VERSION = 1


class SessionError(PlushError):
    """A recording session folder cannot be used as asked."""


class Action(Enum):
    """What the owner chose."""

    START = "start"
    KEEP = "keep"
    REDO = "redo"
    SKIP = "skip"
    QUIT = "quit"


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RecordingSession:
    """The state of one session folder; every change is on disk when the method returns."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder = folder
        self._state = state

    @classmethod
    def open(cls, folder: Path, *, language: str, prompts: list[Prompt], sample_rate: int) -> RecordingSession:
        """Resume the session in `folder`, or start one there with `prompts` (a session keeps its own copy)."""
        path = folder / STATE_FILE
        if path.is_file():
            session = cls.load(folder)
            if session.language != language:
                raise SessionError(
                    f"{folder} is a {session.language} session; record {language} in another folder "
                    f"(or pass --language {session.language} to go on with this one)"
                )
            return session
        if folder.is_dir() and any(folder.iterdir()):
            raise SessionError(f"{folder} has files but no {STATE_FILE}: choose an empty or new folder")
        if not prompts:
            raise SessionError("there are no sentences to record")
        state = {
            "version": STATE_VERSION,
            "language": language,
            "sample_rate": sample_rate,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "prompts": [{"id": p.id, "text": p.text} for p in prompts],
            "takes": {},
            "skipped": [],
        }
        session = cls(folder, state)
        session.save()
        return session

    @classmethod
    def load(cls, folder: Path) -> RecordingSession:
        """The session in `folder`; a damaged state file is an error that names it (nothing is overwritten)."""
        path = folder / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("version") != STATE_VERSION or not isinstance(state.get("takes"), dict):
                raise ValueError(f"unknown session format {state.get('version')!r}")
        except (OSError, ValueError) as exc:
            raise SessionError(f"cannot read the recording session {path}: {exc}") from exc
        return cls(folder, state)

    def save(self) -> None:
        text = json.dumps(self._state, ensure_ascii=False, indent=1)
        write_atomically(self.folder / STATE_FILE, text.encode("utf-8"))

    @property
    def language(self) -> str:
        return str(self._state["language"])

    @property
    def sample_rate(self) -> int:
        return int(self._state["sample_rate"])

    @property
    def prompts(self) -> list[Prompt]:
        return [Prompt(id=p["id"], text=p["text"]) for p in self._state["prompts"]]

    @property
    def takes(self) -> dict[str, dict[str, Any]]:
        """Kept takes by prompt id: `file` (relative to the folder), `text`, `seconds` and the checks."""
        return dict(self._state["takes"])

    @property
    def skipped(self) -> list[str]:
        return list(self._state["skipped"])

    def pending(self) -> list[Prompt]:
        """Prompts still to record, in order (neither kept nor skipped)."""
        done = set(self._state["takes"]) | set(self._state["skipped"])
        return [p for p in self.prompts if p.id not in done]

    def recorded_seconds(self) -> float:
        return float(sum(take["seconds"] for take in self._state["takes"].values()))

    def keep(self, prompt: Prompt, audio: FloatAudio, check: TakeCheck) -> Path:
        """Store the take trimmed to its speech, then record it in the state."""
        start, end = check.trim
        relative = f"takes/{prompt.id}.wav"
        path = self.folder / relative
        tmp = path.with_name(f".{path.name}.tmp")
        write_wav(tmp, float_to_pcm16(audio[start:end]), self.sample_rate)
        os.replace(tmp, path)
        self._state["takes"][prompt.id] = {
            "file": relative,
            "text": prompt.text,
            "seconds": round((end - start) / self.sample_rate, 3),
            "kept_with_problems": check.problems,
            "check": check.to_json(),
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if prompt.id in self._state["skipped"]:
            self._state["skipped"].remove(prompt.id)
        self.save()
        log.info("take_kept", prompt=prompt.id, seconds=round((end - start) / self.sample_rate, 2))
        return path

    def skip(self, prompt: Prompt) -> None:
        if prompt.id not in self._state["skipped"]:
            self._state["skipped"].append(prompt.id)
        self.save()

    def retry_skipped(self) -> None:
        """Put the skipped sentences back in line."""
        self._state["skipped"] = []
        self.save()


@dataclass
class TakeChecker:
    """Checks a take: VAD trim, level, clipping, noise, and (with a transcriber) the words."""

    vad: SileroVad
    language: str
    transcriber: Transcriber | None = None
    limits: CheckLimits = field(default_factory=CheckLimits)

    def __call__(self, audio: FloatAudio, rate: int, text: str) -> TakeCheck:
        check = check_take(audio, rate, self.vad, limits=self.limits)
        if self.transcriber is None:
            return check
        return check_words(
            check, audio, rate, text, language=self.language, transcriber=self.transcriber, limits=self.limits
        )


class SessionUI(Protocol):
    """What the owner sees and chooses; the terminal UI and the tests' scripted UI implement it."""

    def show_prompt(self, prompt: Prompt, position: int, total: int, attempt: int) -> None:
        """Show the sentence to read (`position` of `total`; `attempt` 2 and up is a redo)."""

    def wait_to_start(self) -> Action:
        """Block until the owner starts recording (START), or chooses SKIP or QUIT."""

    def wait_to_stop(self, microphone: Microphone) -> None:
        """Block while the owner speaks; return when they stop the take."""

    def review(self, prompt: Prompt, check: TakeCheck, audio: FloatAudio, rate: int) -> Action:
        """Show the checks; return KEEP, REDO, SKIP or QUIT."""


@dataclass
class SessionSummary:
    """What one sitting did."""

    kept: int = 0
    redone: int = 0
    skipped: int = 0
    interrupted: bool = False
    remaining: int = 0


def run_session(
    session: RecordingSession,
    ui: SessionUI,
    microphone: Microphone,
    checker: Callable[[FloatAudio, int, str], TakeCheck],
    *,
    limit: int | None = None,
) -> SessionSummary:
    """Record the pending prompts in order until all are done, `limit` takes were kept, or the owner quits.

    Ctrl+C at any point ends the sitting with everything kept so far on disk (`interrupted` is set)."""
    if microphone.sample_rate != session.sample_rate:
        raise SessionError(
            f"this session records at {session.sample_rate} Hz, the microphone at {microphone.sample_rate}"
        )
    summary = SessionSummary()
    total = len(session.prompts)
    try:
        for prompt in session.pending():
            if limit is not None and summary.kept >= limit:
                break
            position = total - len(session.pending()) + 1
            action = _record_prompt(
                session, ui, microphone, checker, prompt, position=position, total=total, summary=summary
            )
            if action is Action.QUIT:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
        log.info("session_interrupted", folder=str(session.folder), kept=summary.kept)
    finally:
        microphone.stop()
    summary.remaining = len(session.pending())
    return summary


def _record_prompt(
    session: RecordingSession,
    ui: SessionUI,
    microphone: Microphone,
    checker: Callable[[FloatAudio, int, str], TakeCheck],
    prompt: Prompt,
    *,
    position: int,
    total: int,
    summary: SessionSummary,
) -> Action:
    attempt = 1
    while True:
        ui.show_prompt(prompt, position, total, attempt)
        action = ui.wait_to_start()
        if action is Action.SKIP:
            session.skip(prompt)
            summary.skipped += 1
            return action
        if action is Action.QUIT:
            return action
        microphone.start()
        try:
            ui.wait_to_stop(microphone)
        finally:
            audio = microphone.stop()
        check = checker(audio, microphone.sample_rate, prompt.text)
        action = ui.review(prompt, check, audio, microphone.sample_rate)
        if action is Action.KEEP and check.speech_s > 0:
            session.keep(prompt, audio, check)
            summary.kept += 1
            return action
        if action is Action.SKIP:
            session.skip(prompt)
            summary.skipped += 1
            return action
        if action is Action.QUIT:
            return action
        attempt += 1
        summary.redone += 1
