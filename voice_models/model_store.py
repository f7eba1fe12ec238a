"""The model store: which models Plush knows, where they live on disk, and how to fetch them.

Config values name a model either by a known name (`whisper-base`) or by a path. Known models are fetched from
the Hugging Face Hub with `plush models download` (progress bars, resumable) into the cache folder; at run time
nothing is downloaded, so a plush works offline and a missing model is a clear error naming the command to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plush.config import ModelsConfig, cache_home
from plush.errors import ModelMissingError, PlushError
from voice_models.model_checksums import (
    FileRecord,
    check_file,
    hub_etag,
    matches_etag,
    read_manifest,
    record_file,
    sha256_of,
)

Kind = Literal["stt", "tts", "llm"]


@dataclass(frozen=True)
class KnownModel:
    """A model Plush can download by name."""

    name: str
    kind: Kind
    repo_id: str
    """Hugging Face repository that holds the files."""
    files: tuple[str, ...]
    """Paths inside the repository; all are fetched."""
    entry: str | None
    """The file the loader opens, or None when the loader takes the folder (Whisper)."""
    size_mb: int
    languages: str
    description: str


def _whisper(size: str, mb: int, note: str) -> KnownModel:
    return KnownModel(
        name=f"whisper-{size}",
        kind="stt",
        repo_id=f"Systran/faster-whisper-{size}",
        files=("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"),
        entry=None,
        size_mb=mb,
        languages="multilingual",
        description=note,
    )


def _piper(name: str, path: str, mb: int, languages: str, note: str) -> KnownModel:
    return KnownModel(
        name=name,
        kind="tts",
        repo_id="rhasspy/piper-voices",
        files=(path, path + ".json"),
        entry=path,
        size_mb=mb,
        languages=languages,
        description=note,
    )


def _gguf(name: str, repo: str, mb: int, note: str) -> KnownModel:
    return KnownModel(
        name=name,
        kind="llm",
        repo_id=repo,
        files=(f"{name}.gguf",),
        entry=f"{name}.gguf",
        size_mb=mb,
        languages="multilingual (ko, en, ...)",
        description=note,
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        _whisper("tiny", 75, "fastest; weak on Korean"),
        _whisper("base", 145, "default on the plush: fast on a Pi 5, fair English, weak Korean"),
        _whisper("small", 485, "good Korean; for the server or a Jetson"),
        _whisper("medium", 1530, "best Korean here; server with a GPU"),
        _piper(
            "piper-en-lessac-medium",
            "en/en_US/lessac/medium/en_US-lessac-medium.onnx",
            63,
            "en",
            "default voice until the owner's voice is cloned",
        ),
        _gguf(
            "qwen2.5-1.5b-instruct-q4_k_m",
            "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
            1120,
            "default local brain: speaks Korean and English",
        ),
        _gguf(
            "qwen2.5-0.5b-instruct-q4_k_m",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            400,
            "smallest local brain, for a Pi",
        ),
    )
}

DEFAULT_DOWNLOADS = ("whisper-base", "piper-en-lessac-medium", "qwen2.5-1.5b-instruct-q4_k_m")


class ModelStore:
    """Resolves model names or paths to files on disk and downloads known models into `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_config(cls, config: ModelsConfig) -> ModelStore:
        """The store at `models.dir`, or the per-user cache folder."""
        return cls(config.dir or cache_home() / "models")

    def folder(self, name: str) -> Path:
        """The folder a known model is (or will be) stored in."""
        return self.root / name

    def is_downloaded(self, model: KnownModel) -> bool:
        """True when every file of the model is on disk."""
        return all((self.folder(model.name) / f).is_file() for f in model.files)

    def resolve(self, spec: str, kind: Kind) -> Path:
        """The path a loader should open for a config value: a known name or an explicit path."""
        known = KNOWN_MODELS.get(spec)
        if known is None:
            path = Path(spec).expanduser()
            if path.exists():
                return path
            names = ", ".join(n for n, m in KNOWN_MODELS.items() if m.kind == kind)
            raise ModelMissingError(
                f"{kind} model '{spec}' is neither a file nor a known model name (known: {names}); "
                "see `plush models list`"
            )
        if known.kind != kind:
            raise PlushError(f"'{spec}' is a {known.kind} model, but a {kind} model is needed here")
        if not self.is_downloaded(known):
            raise ModelMissingError(
                f"{kind} model '{spec}' is not downloaded (looked in {self.folder(spec)}); "
                f"run: plush models download {spec}"
            )
        folder = self.folder(spec)
        records = read_manifest(folder)
        for file in known.files:  # sizes only: hashing a gigabyte at every start would be too slow
            if file in records and (folder / file).stat().st_size != records[file].size:
                raise ModelMissingError(
                    f"{kind} model '{spec}' is damaged ({file} is not the size that was downloaded); "
                    f"run: plush models verify {spec} --fix"
                )
        return folder / known.entry if known.entry else folder

    def download(self, name: str) -> Path:
        """Fetch a known model (skipping files already complete; interrupted files resume) with progress bars."""
        known = KNOWN_MODELS.get(name)
        if known is None:
            raise PlushError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}")
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        # HfHubHTTPError subclasses its HTTP client's base error (httpx2.HTTPError in huggingface_hub 2.x). Once its
        # retries are spent, hf_hub_download lets that client's own errors escape (a connection refused or cut
        # mid-file, a timeout): catch that base too, so they are a download failure and not a traceback.
        download_errors: tuple[type[Exception], ...] = (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OSError,
            *(base for base in HfHubHTTPError.__bases__ if issubclass(base, Exception)),
        )
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        records = read_manifest(folder)
        for file in known.files:
            path = folder / file
            if path.is_file() and file in records and path.stat().st_size != records[file].size:
                _discard(folder, file)  # damaged (cut short or overwritten): fetch it again
            try:
                hf_hub_download(known.repo_id, file, local_dir=folder)
            except download_errors as exc:
                reason = _one_line(exc)
                if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
                    # "check your connection" hides what happened (refused, 404, 500 ...); the cause says it.
                    reason += f" ({type(exc.__cause__).__name__}: {_one_line(exc.__cause__)})"
                raise PlushError(
                    f"could not download {file} of '{name}' from {known.repo_id}: {reason}. "
                    "Check the network, or download the files yourself and set the model's path in the config."
                ) from exc
            if file not in records or path.stat().st_size != records[file].size:
                _accept(folder, name, file)
        return folder / known.entry if known.entry else folder

    def verify(self, name: str) -> list[str]:
        """What is wrong with a downloaded model's files (an empty list when every checksum matches)."""
        known = KNOWN_MODELS.get(name)
        if known is None:
            raise PlushError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}")
        folder = self.folder(name)
        records = read_manifest(folder)
        return [problem for file in known.files if (problem := check_file(folder, file, records)) is not None]

    def discard_damaged(self, name: str) -> list[str]:
        """Delete the files of a model that fail verification, so `download` fetches them again."""
        known = KNOWN_MODELS[name]
        folder = self.folder(name)
        records = read_manifest(folder)
        damaged = [f for f in known.files if (folder / f).is_file() and check_file(folder, f, records) is not None]
        for file in damaged:
            _discard(folder, file)
        return damaged


def _accept(folder: Path, name: str, file: str) -> None:
    """Check a freshly downloaded file against the Hub's checksum and record its own for later verification."""
    path = folder / file
    digest = sha256_of(path)
    etag = hub_etag(folder, file)
    if etag is not None and matches_etag(path, digest, etag) is False:
        _discard(folder, file)
        raise PlushError(
            f"{file} of '{name}' arrived damaged (its checksum does not match the Hub's); run the download again"
        )
    record_file(folder, file, FileRecord(digest, path.stat().st_size))


def _discard(folder: Path, file: str) -> None:
    """Remove a file and huggingface_hub's note that it is complete."""
    (folder / file).unlink(missing_ok=True)
    (folder / ".cache" / "huggingface" / "download" / f"{file}.metadata").unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    """An error's message on one line: huggingface_hub's span several, and the CLI prints one line per error."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
