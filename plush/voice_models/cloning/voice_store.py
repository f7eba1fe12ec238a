"""The voice store: the owner's own Piper voices, and which one the server speaks with.

Voices live under the models folder, `voices/<name>/<name>.onnx` with `.onnx.json` beside it and `voice.json`
(its base, dataset, training steps and `check` scores). `plush voice use NAME` writes the name into
`voices/active`; the server looks at that file's stamp (a `stat`, no read) when a turn starts and loads the new
voice when it changed, so switching needs no restart. `use default` removes the marker: the server goes back to
`[tts] voice` from the config. Writes are atomic (a temporary file renamed), so a server never reads half a name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plush.errors import PlushError

VOICES_FOLDER = "voices"
ACTIVE_FILE = "active"
INFO_FILE = "voice.json"
DEFAULT = "default"
"""`use default`: back to the config's `[tts] voice`."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class VoiceStoreError(PlushError):
    """A voice name is invalid or not in the store."""


@dataclass(frozen=True)
class StoredVoice:
    name: str
    onnx: Path
    info: dict[str, Any]

    @property
    def config(self) -> Path:
        return Path(f"{self.onnx}.json")


def check_voice_name(name: str) -> str:
    """Voice names are folder names: lower-case letters, digits, `-` and `_`; `default` is taken."""
    if not _NAME.match(name) or name == DEFAULT:
        raise VoiceStoreError(
            f"'{name}' cannot name a voice: use lower-case letters, digits, '-' or '_' (up to 40), not 'default'"
        )
    return name


class VoiceStore:
    """Voices in `root` (`<models dir>/voices`) and the active-voice marker."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def in_models(cls, models_root: Path) -> VoiceStore:
        return cls(models_root / VOICES_FOLDER)

    @property
    def marker(self) -> Path:
        return self.root / ACTIVE_FILE

    def onnx_path(self, name: str) -> Path:
        """Where voice `name`'s `.onnx` is (or will be written)."""
        return self.root / check_voice_name(name) / f"{name}.onnx"

    def has(self, name: str) -> bool:
        return _NAME.match(name) is not None and self.onnx_path(name).is_file()

    def get(self, name: str) -> StoredVoice:
        if not self.has(name):
            known = ", ".join(v.name for v in self.list()) or "none yet"
            raise VoiceStoreError(f"there is no voice '{name}' in {self.root} (voices: {known})")
        onnx = self.onnx_path(name)
        info_path = onnx.parent / INFO_FILE
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        return StoredVoice(name, onnx, info)

    def list(self) -> list[StoredVoice]:
        if not self.root.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir()) if p.is_dir() and self.has(p.name)]

    def update_info(self, name: str, **fields: Any) -> None:
        """Merge `fields` into the voice's `voice.json`."""
        voice = self.get(name)
        _write_atomically(voice.onnx.parent / INFO_FILE, json.dumps({**voice.info, **fields}, indent=2, default=str))

    def remove(self, name: str) -> bool:
        """Delete a voice; returns True when it was the active one (the server then goes back to the config's)."""
        voice = self.get(name)
        was_active = self.active() == name
        if was_active:
            self.marker.unlink(missing_ok=True)
        shutil.rmtree(voice.onnx.parent)
        return was_active

    def use(self, name: str) -> StoredVoice | None:
        """Make `name` the server's voice (`default`: the config's again); returns the voice, None for default."""
        if name == DEFAULT:
            self.marker.unlink(missing_ok=True)
            return None
        voice = self.get(name)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.marker, name + "\n")
        return voice

    def active(self) -> str | None:
        """The name in the marker, if any (a marker naming a removed voice counts as none)."""
        try:
            name = self.marker.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return name if self.has(name) else None

    def stamp(self) -> tuple[int, int] | None:
        """A cheap fingerprint of the marker (mtime in ns, inode): changes whenever `use` runs."""
        try:
            st = self.marker.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
