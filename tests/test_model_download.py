"""`plush models download` for real: the real CLI and the real huggingface_hub client against a fake Hub.

Why: the download is the first thing a new owner runs, and everything that can go wrong with it (a complete
file fetched again, a dropped connection, a Hub that is down or lacks a file) happens inside huggingface_hub,
whose behaviour shifts between releases. So each test runs `python -m plush models download` as a user does,
with `HF_ENDPOINT` pointing at `fakes.hf_hub.FakeHub` on 127.0.0.1, and checks the bytes on disk, the requests
the Hub saw, the exit status and the error line.

What huggingface_hub 2.4 does, as these tests pin it down:

* A complete file is not fetched again: a second run sends one HEAD per file (to compare ETags with the
  metadata it keeps in `<model>/.cache/huggingface/`) and no GET.
* A connection cut mid-file is resumed within the same run: after 1 s it GETs again with
  `Range: bytes=N-`, where N is what it had written, a whole number of 10 MiB chunks (bytes after the last
  full chunk are dropped, so a file under 10 MiB is fetched again from byte 0). It tries 5 times.
* A run that fails keeps no partial file: the next run fetches the file from byte 0, without `Range`.
* An unreachable Hub would be retried with backoff (1+2+4+8+8 s, about 24 s); Plush looks the host up and
  connects once first, so a Hub that cannot be reached at all fails at once with the reason.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.hf_hub import FakeHub
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from plush.errors import ModelMissingError
from plush.voice_models.model_checksums import MANIFEST
from plush.voice_models.model_store import KNOWN_MODELS, ModelStore

MODEL = "whisper-tiny"
REPO_ID = KNOWN_MODELS[MODEL].repo_id
FILES: dict[str, bytes] = {
    "config.json": b'{"alignment_heads": [[2, 2]], "lang_ids": [50259]}\n',
    "model.bin": random.Random(1).randbytes(4096),
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}\n',
    "vocabulary.txt": b"<|endoftext|>\nhello\nworld\n",
}
"""Small stand-ins for whisper-tiny's files; model.bin is served as an LFS file (redirect to the CDN)."""
BIG = random.Random(2).randbytes(DOWNLOAD_CHUNK_SIZE + 2 * 1024 * 1024)
"""A model.bin over one 10 MiB download chunk: the smallest size at which a resume can skip bytes."""
CUT_AT = DOWNLOAD_CHUNK_SIZE + 1024 * 1024
"""Where a cut connection drops model.bin: past the first whole chunk, short of the end."""

_SKIP_BACKOFF = (
    "import runpy, time\n"
    "time.sleep = lambda seconds: None\n"
    "runpy.run_module('plush', run_name='__main__', alter_sys=True)\n"
)
"""Runs `python -m plush` with `time.sleep` a no-op, for the tests that make huggingface_hub retry.

Its waits (1 s before each resume, 1+2+4+8+8 s for an unreachable Hub) would cost 1 to 24 s a test and decide
nothing: the requests and the outcome are the same without them. Nothing else in the command sleeps.
"""


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """The fake Hub with whisper-tiny's files; afterwards, checks the client asked only for what a Hub serves."""
    with FakeHub() as fake:
        for name, data in FILES.items():
            fake.add_file(REPO_ID, name, data, lfs=name == "model.bin")
        yield fake
        assert fake.unexpected() == [], "the client asked for something a Hub does not serve here (Xet, tree API?)"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """Where the command stores models (`models.dir`); created by the download itself."""
    return tmp_path / "models"


def plush(
    *args: str, endpoint: str, models_dir: Path, wide: bool = False, skip_backoff: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the real `plush` command against `endpoint`, with models stored in `models_dir`.

    conftest has already isolated config, cache and PLUSH_* variables and set HF_HUB_OFFLINE=1; here the Hub
    is switched back on and pointed at the fake, and any token or Hub setting of the developer is dropped.
    `wide` sets a wide terminal so rich prints each message on one line: the error tests check that the
    message itself is one line, not how an 80-column pipe folds it.
    """
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("HF_", "HUGGINGFACE_")) or key in ("TRANSFORMERS_OFFLINE", "COLUMNS", "TQDM_POSITION"):
            del env[key]
    env.update(HF_ENDPOINT=endpoint, PLUSH_MODELS__DIR=str(models_dir), PYTHONIOENCODING="utf-8")
    if wide:
        env["COLUMNS"] = "1000"
    command = [sys.executable, "-c", _SKIP_BACKOFF] if skip_backoff else [sys.executable, "-m", "plush"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def download_from_hub(
    endpoint: str, models_dir: Path, *, skip_backoff: bool = False
) -> subprocess.CompletedProcess[str]:
    """`plush models download whisper-tiny --source hub`: the Hub alone, so a failure is not rescued by the registry."""
    return plush(
        "models",
        "download",
        MODEL,
        "--source",
        "hub",
        endpoint=endpoint,
        models_dir=models_dir,
        wide=True,
        skip_backoff=skip_backoff,
    )


def files_in(folder: Path) -> dict[str, bytes]:
    """The model's files as a user sees them: everything but huggingface_hub's `.cache` bookkeeping."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts and p.name != MANIFEST
    }


def leftovers(root: Path) -> list[Path]:
    """Partial downloads anywhere under `root` (huggingface_hub names them `*.incomplete`)."""
    return sorted(root.rglob("*.incomplete"))


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line the CLI prints for a failed command: exit 1, no traceback, nothing after it.

    Lines before it are huggingface_hub's warnings and request logs; anything after it would be the error
    message running onto more lines.
    """
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.rstrip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert errors == [len(lines) - 1], result.stderr
    return lines[-1]


def downloaded_cell(table: str, name: str) -> str:
    """The "here" cell (downloaded or not) of `name`'s row in `plush models list` output.

    The table is rendered for an 80-column pipe, so the notes wrap; the name column is no_wrap, so a row's
    first line starts with the whole name, and "yes"/"no" fit on that line.
    """
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    titles = [cell.strip() for cell in header.strip("┃").split("┃")]
    column = titles.index("here")
    for line in lines:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if line.startswith("│") and cells[0] == name:
            return cells[column]
    raise AssertionError(f"no row for {name} in:\n{table}")


def test_download_fetches_exact_bytes_then_list_and_resolve_find_them(hub: FakeHub, models_dir: Path) -> None:
    """A known name lands byte for byte in <models dir>/<name>/, over plain HTTP, and the rest of Plush sees it."""
    result = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir, wide=True)

    assert result.returncode == 0, result.stderr
    folder = models_dir / MODEL
    assert f"ready: {folder}" in result.stdout
    assert files_in(folder) == FILES
    assert leftovers(models_dir) == []
    # One HEAD and one GET per file; the LFS file came from the CDN behind the redirect (not from Xet).
    for name in FILES:
        assert len(hub.heads(name)) == 1, name
        assert [(g.status, g.range) for g in hub.gets(name)] == [(200, None)], name
    assert [g.server for g in hub.gets("model.bin")] == ["cdn"]

    listing = plush("models", "list", endpoint=hub.url, models_dir=models_dir)
    assert listing.returncode == 0, listing.stderr
    assert downloaded_cell(listing.stdout, MODEL) == "yes"
    assert downloaded_cell(listing.stdout, "whisper-base") == "no"
    assert ModelStore(models_dir).resolve(MODEL, "stt") == folder


def test_second_download_fetches_nothing_again(hub: FakeHub, models_dir: Path) -> None:
    """Re-running the command (e.g. after adding a model to the list) must not pull complete files again."""
    first = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir)
    assert first.returncode == 0, first.stderr
    folder = models_dir / MODEL
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    hub.clear_requests()

    second = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir)

    assert second.returncode == 0, second.stderr
    for name in FILES:
        assert len(hub.heads(name)) == 1, name  # huggingface_hub still checks the ETag ...
        assert hub.gets(name) == [], name  # ... but fetches nothing
    assert files_in(folder) == FILES
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()} == stamps


def test_connection_cut_mid_file_resumes_with_range_in_the_same_run(hub: FakeHub, models_dir: Path) -> None:
    """A dropped connection costs a retry, not the download, and the retry asks only for the missing bytes.

    huggingface_hub resumes from the bytes it wrote, which are whole 10 MiB chunks: the cut is at 11 MiB, the
    resume at 10 MiB. A small file cut the same way is fetched again whole, which is also checked here.
    """
    hub.add_file(REPO_ID, "model.bin", BIG, lfs=True)
    hub.cut(REPO_ID, "model.bin", after=CUT_AT)
    hub.cut(REPO_ID, "config.json", after=10)

    result = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir, skip_backoff=True)

    assert result.returncode == 0, result.stderr
    assert files_in(models_dir / MODEL) == {**FILES, "model.bin": BIG}
    assert leftovers(models_dir) == []
    big = hub.gets("model.bin")
    assert [(g.status, g.range, g.body_bytes, g.cut) for g in big] == [
        (200, None, CUT_AT, True),
        (206, f"bytes={DOWNLOAD_CHUNK_SIZE}-", len(BIG) - DOWNLOAD_CHUNK_SIZE, False),
    ]
    small = hub.gets("config.json")
    assert [(g.status, g.range, g.cut) for g in small] == [(200, None, True), (200, None, False)]


def test_failed_run_keeps_no_partial_file_and_next_run_fetches_it_whole(hub: FakeHub, models_dir: Path) -> None:
    """When a run gives up half way through a file, the next run completes it, byte for byte.

    The first run is cut at 11 MiB and its resume request fails (500), so it exits 1. huggingface_hub 2.4
    downloads into a temporary file unique to the process and deletes it on failure: nothing partial is left
    on disk and the next run GETs the file from byte 0 (no Range). Files completed before are not fetched again.
    """
    hub.add_file(REPO_ID, "model.bin", BIG, lfs=True)
    hub.cut(REPO_ID, "model.bin", after=CUT_AT)
    hub.fail(REPO_ID, "model.bin", 500, method="GET")

    first = download_from_hub(hub.url, models_dir, skip_backoff=True)

    line = error_line(first)
    assert f"could not download '{MODEL}'. Hugging Face Hub: could not download model.bin" in line
    assert "500" in line
    assert [(g.status, g.range) for g in hub.gets("model.bin")] == [(200, None), (500, f"bytes={DOWNLOAD_CHUNK_SIZE}-")]
    folder = models_dir / MODEL
    assert files_in(folder) == {"config.json": FILES["config.json"]}
    assert leftovers(models_dir) == []
    hub.clear_requests()

    second = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir)

    assert second.returncode == 0, second.stderr
    assert [(g.status, g.range, g.body_bytes) for g in hub.gets("model.bin")] == [(200, None, len(BIG))]
    assert hub.gets("config.json") == []
    assert files_in(folder) == {**FILES, "model.bin": BIG}


def test_connection_cut_on_every_try_is_one_error_line(hub: FakeHub, models_dir: Path) -> None:
    """When huggingface_hub runs out of retries, the raw HTTP client error it lets escape is still a clean error.

    Guards the catch of the HTTP client's base error in ModelStore.download: without it this printed a traceback.
    """
    hub.cut(REPO_ID, "model.bin", after=1000, times=None)

    result = download_from_hub(hub.url, models_dir, skip_backoff=True)

    line = error_line(result)
    assert f"could not download model.bin from {REPO_ID}" in line
    # The first try and 5 retries, each from byte 0: 1000 bytes never make a whole 10 MiB chunk.
    assert [(g.range, g.cut) for g in hub.gets("model.bin")] == [(None, True)] * 6
    assert "model.bin" not in files_in(models_dir / MODEL)
    assert leftovers(models_dir) == []


def test_unreachable_hub_is_one_error_line_without_retries(models_dir: Path) -> None:
    """No route to the Hub: exit 1 at once with one line naming the model and why (no ~25 s of retries)."""
    with socket.socket() as closed:  # bound, never listening: connections are refused, and the port stays ours
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = download_from_hub(f"http://127.0.0.1:{port}", models_dir)

    line = error_line(result)
    assert f"could not download '{MODEL}'. Hugging Face Hub: 127.0.0.1:{port} cannot be reached" in line
    assert "ConnectionRefusedError" in line
    assert "Check the network" in line
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr


def test_hub_whose_name_does_not_resolve_is_one_line_and_no_warnings(models_dir: Path) -> None:
    """A machine without DNS for the Hub (the usual 'no internet') says so once, and huggingface_hub is not run."""
    result = download_from_hub("http://hub.plush-test.invalid", models_dir)

    line = error_line(result)
    assert "hub.plush-test.invalid does not resolve" in line
    assert result.stderr.strip().splitlines() == [line], "one line, no doubled warnings or retry logs"


@pytest.mark.parametrize(
    ("served", "failing", "status"),
    [(["config.json", "model.bin", "tokenizer.json"], "vocabulary.txt", "404"), ([], "config.json", "401")],
    ids=["file-missing", "repo-missing"],
)
def test_hub_without_the_file_or_repo_is_one_error_line(
    models_dir: Path, served: list[str], failing: str, status: str
) -> None:
    """A file or repository gone upstream (renamed, removed) fails fast with the Hub's answer, not a traceback.

    The Hub answers 404 EntryNotFound for a missing file and, to an anonymous caller, 401 RepoNotFound for a
    missing repository; huggingface_hub does not retry either.
    """
    with FakeHub() as fake:
        for name in served:
            fake.add_file(REPO_ID, name, FILES[name], lfs=name == "model.bin")
        result = download_from_hub(fake.url, models_dir)
        assert fake.unexpected() == []
        assert len(fake.heads(failing)) == 1

    line = error_line(result)
    assert f"could not download {failing} from {REPO_ID}" in line
    assert status in line
    assert sorted(files_in(models_dir / MODEL)) == sorted(served)


def test_unknown_model_name_lists_the_known_ones(models_dir: Path) -> None:
    """A typo in a model name says which names exist, before any network access."""
    result = plush(
        "models", "download", "whisper-huge", endpoint="http://127.0.0.1:1", models_dir=models_dir, wide=True
    )

    line = error_line(result)
    assert "unknown model 'whisper-huge'" in line
    for name in KNOWN_MODELS:
        assert name in line
    assert not (models_dir / "whisper-huge").exists()


def test_verify_finds_a_damaged_file_and_fix_fetches_it_again(hub: FakeHub, models_dir: Path) -> None:
    assert plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir).returncode == 0
    ok = plush("models", "verify", endpoint=hub.url, models_dir=models_dir)
    assert ok.returncode == 0 and f"{MODEL}: ok" in ok.stdout

    weights = models_dir / MODEL / "model.bin"
    damaged = bytearray(weights.read_bytes())
    damaged[1000] ^= 0xFF  # same size, one flipped byte: only a checksum notices
    weights.write_bytes(bytes(damaged))
    bad = plush("models", "verify", MODEL, endpoint=hub.url, models_dir=models_dir, wide=True)
    assert "model.bin does not match its checksum" in bad.stdout
    assert "plush models verify --fix" in error_line(bad)

    hub.clear_requests()
    fixed = plush("models", "verify", MODEL, "--fix", endpoint=hub.url, models_dir=models_dir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert weights.read_bytes() == FILES["model.bin"]
    assert [name for name in FILES if hub.gets(name)] == ["model.bin"], "only the damaged file is fetched again"


def test_a_file_that_arrives_damaged_is_refused_and_not_kept(hub: FakeHub, models_dir: Path) -> None:
    hub.tamper(REPO_ID, "model.bin", b"\x00" * len(FILES["model.bin"]))
    result = download_from_hub(hub.url, models_dir)
    assert "model.bin arrived damaged" in error_line(result)
    assert not (models_dir / MODEL / "model.bin").exists()


def test_a_model_cut_short_on_disk_is_a_clear_error_at_load(hub: FakeHub, models_dir: Path) -> None:
    assert plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir).returncode == 0
    weights = models_dir / MODEL / "model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelMissingError, match=r"damaged .* run: plush models verify whisper-tiny --fix"):
        ModelStore(models_dir).resolve(MODEL, "stt")
    again = plush("models", "download", MODEL, endpoint=hub.url, models_dir=models_dir)
    assert again.returncode == 0 and weights.read_bytes() == FILES["model.bin"], "download repairs it"
