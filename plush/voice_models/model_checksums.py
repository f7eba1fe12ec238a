"""Checksums for downloaded models: each file is checked against the Hub's own checksum when it arrives, and its
SHA-256 and size are kept in the model folder's manifest so `plush models verify` can check it later, offline.

The Hub names a file's checksum in its ETag: the SHA-256 of the content for large (LFS) files, the git blob SHA-1
for small ones. huggingface_hub keeps that ETag next to a `local_dir` download; it is read from there, so
verifying costs no extra request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = ".plush-manifest.json"
_BLOCK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1_of(path: Path) -> str:
    """The id git (and the Hub, for small files) gives a file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hub_etag(folder: Path, filename: str) -> str | None:
    """The ETag huggingface_hub recorded for a file it downloaded into `folder` (None when unknown)."""
    try:
        from huggingface_hub._local_folder import read_download_metadata
    except ImportError:  # pragma: no cover - the helper moved in another huggingface_hub version
        return None
    metadata = read_download_metadata(folder, filename)
    return metadata.etag.strip('"') if metadata is not None and metadata.etag else None


def matches_etag(path: Path, sha256: str, etag: str) -> bool | None:
    """Whether the file matches the Hub's checksum; None when the ETag is not a checksum we know."""
    if len(etag) == 64:
        return etag == sha256
    if len(etag) == 40:
        return etag == git_blob_sha1_of(path)
    return None


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int
    source: str | None = None
    """Where the file came from ("hub", "registry"); None in manifests written before sources existed."""


def read_manifest(folder: Path) -> dict[str, FileRecord]:
    path = folder / MANIFEST
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: FileRecord(str(f["sha256"]), int(f["size"]), f.get("source")) for name, f in data["files"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def record_file(folder: Path, filename: str, record: FileRecord, source: str | None = None) -> None:
    """Keep a file's checksum, size and source in the folder's manifest (written atomically)."""
    files = read_manifest(folder)
    files[filename] = FileRecord(record.sha256, record.size, source or record.source)
    data = {
        "files": {
            name: {"sha256": r.sha256, "size": r.size, **({"source": r.source} if r.source else {})}
            for name, r in sorted(files.items())
        }
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(folder / MANIFEST)


def check_file(folder: Path, filename: str, records: dict[str, FileRecord]) -> str | None:
    """What is wrong with one file of a model (None when it matches its recorded checksum)."""
    path = folder / filename
    if not path.is_file():
        return f"{filename} is missing"
    record = records.get(filename)
    if record is None:
        return f"{filename} has no recorded checksum (it was not fetched by `plush models download`)"
    if path.stat().st_size != record.size:
        return f"{filename} is {path.stat().st_size} bytes, {record.size} were downloaded"
    if sha256_of(path) != record.sha256:
        return f"{filename} does not match its checksum (the file is damaged)"
    return None
