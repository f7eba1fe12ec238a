"""A fake Hugging Face Hub that serves files the way ``huggingface_hub.hf_hub_download`` (2.4) fetches them.

Why a server and not a mock: ``plush models download`` is a thin layer over ``hf_hub_download``, and what
matters to a user (which requests go out, whether a complete file is fetched again, what happens when the
connection drops half way, which error escapes when the Hub is down) is decided inside huggingface_hub's HTTP
layer. A loopback server lets the real client run unchanged, so an upgrade that changes its behaviour breaks
the tests instead of a plush in the field.

What ``hf_hub_download(repo_id, filename, local_dir=...)`` does, and what the fake answers:

1. ``HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}`` (with ``Accept-Encoding: identity``). The client
   needs ``X-Repo-Commit`` and an ``ETag`` (``X-Linked-Etag`` wins when present), and takes the size from
   ``X-Linked-Size`` or, when not redirected, ``Content-Length``. Redirects on the same origin are followed;
   a redirect to another origin (the CDN) is not: its own headers are the metadata and its ``Location`` is
   what the client GETs. The fake serves small files straight from ``/resolve`` with their git blob SHA-1
   as ETag, and "LFS" files (``lfs=True``) with a 302 to a second listener, the CDN, with the SHA-256 as
   ``X-Linked-Etag``, like the real Hub.
2. Xet: the client switches to Xet storage only when the HEAD answer carries ``X-Xet-Hash`` (plus a refresh
   route). The fake never sends it, so downloads take the plain HTTP path whether or not ``hf_xet`` is
   installed, and ``HF_HUB_DISABLE_XET`` is not needed.
3. ``GET`` of the location, streamed in ``DOWNLOAD_CHUNK_SIZE`` (10 MiB) chunks into a temporary file. When the
   connection breaks, the client sleeps 1 s and GETs again with ``Range: bytes=<bytes already written>-`` (up
   to 5 times); the fake answers ranges with 206 and ``Content-Range``.
4. Besides files, the client asks once for ``/api/agent-harnesses`` (a best-effort registry it uses to tag its
   user agent); the fake serves the empty registry.
5. A dataset repository (``repo_type="dataset"``) is asked for under ``/datasets/{repo_id}/resolve/...``;
   register its files as ``add_file("datasets/owner/name", ...)``.
6. Errors: a missing file is ``404`` with ``X-Error-Code: EntryNotFound``, a missing repo ``401`` with
   ``X-Error-Code: RepoNotFound`` (what the Hub tells an anonymous caller), an unknown revision ``404`` with
   ``RevisionNotFound``; the client turns these headers into its typed errors.

Usage::

    with FakeHub() as hub:
        hub.add_file("Systran/faster-whisper-tiny", "config.json", b"{}")
        hub.add_file("Systran/faster-whisper-tiny", "model.bin", weights, lfs=True)
        hub.cut("Systran/faster-whisper-tiny", "model.bin", after=11 * 2**20)  # the next GET dies at 11 MiB
        env["HF_ENDPOINT"] = hub.url
        ...  # run the download
        assert hub.gets("model.bin")[1].range == "bytes=10485760-"  # resumed after the last whole chunk

The servers run in background threads (one thread per connection); all state is guarded by one lock, so
tests can register files and read the log while the client downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "DEFAULT_COMMIT",
    "FakeHub",
    "RecordedRequest",
]

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit every ``main`` resolves to (40 hex digits, as ``X-Repo-Commit`` must be)."""

Method = Literal["HEAD", "GET"]
Server = Literal["hub", "cdn"]

_RESOLVE_RE = re.compile(r"^/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_CDN_RE = re.compile(r"^/lfs/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/(?P<sha256>[0-9a-f]{64})$")
_RANGE_RE = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")
_API_ANSWERS: dict[str, bytes] = {"/api/agent-harnesses": b'{"standardEnvVars": [], "harnesses": {}}'}
"""Hub API paths huggingface_hub calls besides ``/resolve``, with the (empty) answers the fake gives."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, and how it answered."""

    server: Server
    """``hub`` for ``/resolve`` (and API) requests, ``cdn`` for LFS content behind the redirect."""
    method: str
    path: str
    """URL path, percent-decoded, without the query."""
    repo_id: str | None
    filename: str | None
    """Path of the file inside the repository, when the request named one the fake could place."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    status: int
    body_bytes: int
    """Body bytes sent (fewer than announced when the fake cut the connection; 0 for HEAD)."""
    cut: bool

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if the client sent one (it does when resuming)."""
        return self.headers.get("range")


@dataclass(frozen=True)
class _File:
    data: bytes
    lfs: bool
    git_sha1: str
    sha256: str


@dataclass
class _Fault:
    repo_id: str
    filename: str
    method: Method | None
    """None: both HEAD and GET."""
    status: int | None
    """Answer with this status ..."""
    error_code: str | None
    """... and this ``X-Error-Code`` (e.g. ``EntryNotFound``), or none ..."""
    cut_after: int | None
    """... or send the headers and this many body bytes, then close the connection."""
    remaining: int | None
    """Requests left to spoil; None: all of them."""

    def matches(self, repo_id: str, filename: str, method: str) -> bool:
        return (
            self.repo_id == repo_id
            and self.filename == filename
            and (self.method is None or self.method == method)
            and (self.remaining is None or self.remaining > 0)
        )


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None
    repo_id: str | None = None
    filename: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, hub: FakeHub, role: Server) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role: Server = role


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every answer carries Content-Length
    server: _Server

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the request log is ``FakeHub.requests``."""

    def _serve(self, method: Method) -> None:
        path = unquote(urlsplit(self.path).path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        hub = self.server.hub
        answer = hub._answer(self.server.role, method, path, headers)
        body = b"" if method == "HEAD" else answer.body[: answer.cut_after]
        # Recorded before answering, so the log is in arrival order even when the client races ahead.
        hub._record(
            RecordedRequest(
                server=self.server.role,
                method=method,
                path=path,
                repo_id=answer.repo_id,
                filename=answer.filename,
                headers=headers,
                status=answer.status,
                body_bytes=len(body),
                cut=answer.cut_after is not None,
            )
        )
        if answer.cut_after is not None:
            self.close_connection = True  # the socket closes once this request is done: the client sees EOF
        self.send_response(answer.status)
        answer.headers.setdefault("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _error(status: int, code: str | None, message: str) -> _Answer:
    headers = {"Content-Type": "application/json"}
    if code is not None:
        headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
    return _Answer(status, headers, json.dumps({"error": message}).encode())


class FakeHub:
    """A Hugging Face Hub on 127.0.0.1 (plus a CDN for LFS files); use as a context manager.

    ``url`` is the value for ``HF_ENDPOINT``. Files are served for revision ``main`` and for ``commit``.
    """

    def __init__(self, commit: str = DEFAULT_COMMIT) -> None:
        self.commit = commit
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], _File] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Bind the Hub and the CDN listeners to free ports and serve in background threads."""
        if self._servers:
            raise RuntimeError("FakeHub already started")
        roles: tuple[Server, ...] = ("hub", "cdn")
        for role in roles:
            server = _Server(self, role)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-hf-{role}", daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both listeners; idempotent."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The Hub endpoint, for ``HF_ENDPOINT``."""
        return self._base(0)

    @property
    def cdn_url(self) -> str:
        """Where LFS files are redirected to (another origin, so the client does not follow the HEAD there)."""
        return self._base(1)

    def _base(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("FakeHub is not started")
        host, port = self._servers[index].server_address[:2]
        return f"http://{host!s}:{port}"

    # -- content and faults --------------------------------------------------------------------------------

    def add_file(self, repo_id: str, path: str, data: bytes, *, lfs: bool = False) -> None:
        """Serve ``data`` as ``path`` in ``repo_id``; ``lfs`` puts it behind a redirect to the CDN."""
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        with self._lock:
            self._files[(repo_id, path)] = _File(data, lfs, git_sha1, hashlib.sha256(data).hexdigest())

    def tamper(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve ``data`` for a file from now on while its ETag still names the original content (a damaged
        transfer or mirror): what a client that checks checksums must refuse."""
        with self._lock:
            file = self._files[(repo_id, path)]
            self._files[(repo_id, path)] = _File(data, file.lfs, file.git_sha1, file.sha256)

    def fail(
        self,
        repo_id: str,
        path: str,
        status: int,
        *,
        method: Method | None = None,
        times: int | None = 1,
        error_code: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests for the file (``None``: all) with ``status`` instead.

        ``method`` narrows it to HEAD (metadata) or GET (content; for an LFS file that is the CDN request).
        ``error_code`` is sent as ``X-Error-Code``, which huggingface_hub maps to its typed errors; without it a
        4xx/5xx is a plain ``HfHubHTTPError``. Faults apply in the order they were added, each until used up.
        """
        with self._lock:
            self._faults.append(_Fault(repo_id, path, method, status, error_code, None, times))

    def cut(self, repo_id: str, path: str, after: int, *, times: int | None = 1) -> None:
        """Let the next ``times`` GETs of the file send their headers and ``after`` body bytes, then hang up.

        The headers announce the full length, so the client sees the body end early (a dropped connection).
        """
        with self._lock:
            self._faults.append(_Fault(repo_id, path, "GET", None, None, after, times))

    # -- request log -----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests so far (e.g. between two download runs)."""
        with self._lock:
            self._requests.clear()

    def heads(self, filename: str) -> list[RecordedRequest]:
        """HEAD requests for a file, any repository."""
        return [r for r in self.requests if r.method == "HEAD" and r.filename == filename]

    def gets(self, filename: str) -> list[RecordedRequest]:
        """GET requests for a file's content (on the Hub or the CDN), any repository."""
        return [r for r in self.requests if r.method == "GET" and r.filename == filename]

    def unexpected(self) -> list[RecordedRequest]:
        """Requests for paths the fake does not serve (e.g. a Xet token or tree API call)."""
        return [r for r in self.requests if r.filename is None and r.path not in _API_ANSWERS]

    # -- serving (called from the handler threads) ------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answer(self, role: Server, method: Method, path: str, headers: dict[str, str]) -> _Answer:
        with self._lock:
            if role == "cdn":
                return self._answer_cdn(method, path, headers)
            if path in _API_ANSWERS:
                return _Answer(200, {"Content-Type": "application/json"}, _API_ANSWERS[path])
            match = _RESOLVE_RE.match(path)
            if match is None:
                return _error(404, None, "Not Found")
            answer = self._answer_resolve(method, match["repo"], match["revision"], match["path"], headers)
            answer.repo_id, answer.filename = match["repo"], match["path"]
            return answer

    def _fault(self, repo_id: str, filename: str, method: Method) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(repo_id, filename, method):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _answer_resolve(
        self, method: Method, repo_id: str, revision: str, filename: str, headers: dict[str, str]
    ) -> _Answer:
        file = self._files.get((repo_id, filename))
        if not any(repo == repo_id for repo, _ in self._files):
            return _error(401, "RepoNotFound", "Repository not found")
        if revision not in ("main", self.commit):
            return _error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        if file is None:
            return _error(404, "EntryNotFound", "Entry not found")
        if not file.lfs:
            return self._content(repo_id, filename, file, method, headers, etag=file.git_sha1)
        # An LFS file: metadata here, content on the CDN. Faults on content apply at the CDN; a HEAD fault
        # applies here, where the client gets the metadata from.
        fault = self._fault(repo_id, filename, method) if method == "HEAD" else None
        if fault is not None and fault.status is not None:
            return _error(fault.status, fault.error_code, HTTPStatus(fault.status).phrase)
        location = f"{self.cdn_url}/lfs/{quote(repo_id)}/{file.sha256}"
        return _Answer(
            302,
            {
                "X-Repo-Commit": self.commit,
                "Location": location,
                "ETag": f'"{file.git_sha1}"',
                "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(len(file.data)),
                "Content-Type": "text/plain; charset=utf-8",
            },
            f"Found. Redirecting to {location}".encode(),
        )

    def _answer_cdn(self, method: Method, path: str, headers: dict[str, str]) -> _Answer:
        match = _CDN_RE.match(path)
        for (repo_id, filename), file in self._files.items():
            if match is not None and repo_id == match["repo"] and file.lfs and file.sha256 == match["sha256"]:
                answer = self._content(repo_id, filename, file, method, headers, etag=file.sha256)
                answer.repo_id, answer.filename = repo_id, filename
                return answer
        return _error(404, None, "Not Found")

    def _content(
        self, repo_id: str, filename: str, file: _File, method: Method, headers: dict[str, str], *, etag: str
    ) -> _Answer:
        """The file's bytes (200, or 206 for a ``Range``), unless a fault spoils the answer."""
        fault = self._fault(repo_id, filename, method)
        if fault is not None and fault.status is not None:
            return _error(fault.status, fault.error_code, HTTPStatus(fault.status).phrase)
        size = len(file.data)
        out = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if not file.lfs:
            out["X-Repo-Commit"] = self.commit
        status, body = 200, file.data
        wanted = headers.get("range")
        if wanted is not None:
            span = _parse_range(wanted, size)
            if span is None:
                return _Answer(416, {"Content-Range": f"bytes */{size}"})
            start, end = span
            status, body = 206, file.data[start : end + 1]
            out["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _Answer(status, out, body, fault.cut_after if fault is not None else None)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a single ``Range: bytes=...`` asks for, or None when it cannot be served."""
    match = _RANGE_RE.match(value.strip())
    if match is None or (not match["start"] and not match["end"]):
        return None
    if not match["start"]:  # suffix: the last N bytes
        start, end = max(size - int(match["end"]), 0), size - 1
    else:
        start = int(match["start"])
        end = min(int(match["end"]), size - 1) if match["end"] else size - 1
    if start >= size or start > end:
        return None
    return start, end
