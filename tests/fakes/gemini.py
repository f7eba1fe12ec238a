"""A fake Gemini REST server that speaks the wire protocol of the real ``google-genai`` client.

Why a server and not a mock: Plush's cloud brain talks to Gemini through ``google-genai``, and the
failure modes we care about (quota errors with a retry delay, safety blocks, a stream cut halfway,
a server that never answers) live in the HTTP layer. Patching the SDK would test our assumptions
about the SDK; a socket-level fake lets the real SDK parse real bytes, so a change in how the SDK
builds requests or surfaces errors breaks the tests instead of production.

Usage::

    with FakeGemini() as fake:
        fake.reply("Hello there. ", "How are you?")
        client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=fake.base_url))
        ...
        assert fake.requests[0].system_instruction == "You are Plush."

The server runs in a background thread, so the same fake serves synchronous and ``asyncio`` tests.
google-genai 3.4.0 uses API version ``v1`` by default; ``v1beta`` (what older SDKs and the docs'
curl examples use) is accepted too.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_REPLY",
    "FakeGemini",
    "RecordedRequest",
]

DEFAULT_REPLY: tuple[str, ...] = ("I'm Plush, your cuddly friend. ", "What shall we talk about?")
"""What the fake answers when no response is scripted, so tests that don't care still get text."""

MODEL_VERSION = "gemini-fake-001"
_FREE_TIER_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"

_PATH_RE = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<action>[A-Za-z]+)$")

# The google.rpc status names that the real API pairs with each HTTP code.
_RPC_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report it."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received, kept so tests can assert what the SDK actually sent.

    ``headers`` keys are lower-cased because HTTP header names are case-insensitive and the SDK's
    transport may change their casing. ``body`` is the parsed JSON (``{}`` when there was none or
    it was not JSON; ``raw_body`` always has the bytes).
    """

    method: str
    path: str
    api_version: str
    model: str
    action: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    raw_body: bytes = field(repr=False)
    received_at: float = field(default_factory=time.time, compare=False)
    """When it arrived (Unix seconds): bench/cluster.py counts requests per moving minute against the budget."""

    @property
    def api_key(self) -> str | None:
        """The key the SDK sent; google-genai uses the ``x-goog-api-key`` header, not ``?key=``."""
        return self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def streaming(self) -> bool:
        """Whether this was a ``streamGenerateContent`` call."""
        return self.action == "streamGenerateContent"

    @property
    def system_instruction(self) -> str | None:
        """The concatenated text of ``systemInstruction``, or None when the request had none."""
        instruction = self.body.get("systemInstruction")
        if not isinstance(instruction, dict):
            return None
        return "".join(str(p.get("text", "")) for p in instruction.get("parts", []) if isinstance(p, dict))

    @property
    def contents(self) -> list[dict[str, Any]]:
        """The ``contents`` history exactly as sent (role + parts per turn)."""
        contents = self.body.get("contents", [])
        return contents if isinstance(contents, list) else []

    @property
    def turns(self) -> list[tuple[str, str]]:
        """``contents`` flattened to ``(role, text)`` pairs, the shape most assertions want."""
        return [
            (
                str(turn.get("role", "")),
                "".join(str(p.get("text", "")) for p in turn.get("parts", []) if isinstance(p, dict)),
            )
            for turn in self.contents
        ]

    @property
    def generation_config(self) -> dict[str, Any]:
        """The ``generationConfig`` object (temperature, maxOutputTokens, ...), ``{}`` if absent."""
        config = self.body.get("generationConfig", {})
        return config if isinstance(config, dict) else {}


# ----------------------------------------------------------------------------------------------
# Scripted behaviours. Each is consumed by exactly one request.


@dataclass(frozen=True)
class _Reply:
    pieces: tuple[str, ...]
    finish_reason: str | None = "STOP"
    """None: the stream ends cleanly but no chunk says why (a cut the HTTP layer did not see)."""
    chunk_delay: float = 0.0
    delay: float = 0.0


@dataclass(frozen=True)
class _Fail:
    status: int
    message: str
    rpc_status: str
    retry_delay: str | None


@dataclass(frozen=True)
class _Cut:
    pieces: tuple[str, ...]


@dataclass(frozen=True)
class _Safety:
    prompt_blocked: bool


_Script = _Reply | _Fail | _Cut | _Safety


class FakeGemini:
    """A local Gemini endpoint with a queue of scripted answers; see the module docstring.

    Every method is thread-safe: tests may script answers from the test thread while the SDK is
    mid-request in another thread or event loop.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Create the server; it listens only after :meth:`start` (or entering the context).

        ``port=0`` picks a free port, so parallel test runs never collide.
        """
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[_Script] = deque()
        self._requests: list[RecordedRequest] = []
        self._default: _Reply = _Reply(DEFAULT_REPLY)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeGemini:
        """Bind and serve in a daemon thread; returns self so ``fake = FakeGemini().start()`` works."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-gemini", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any hanging handler and close kept-alive connections.

        Closing the connections matters: the SDK pools HTTP/1.1 connections, and a handler thread
        blocked on a kept-alive socket would otherwise outlive the test.
        """
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to pass as ``HttpOptions(base_url=...)`` (or env ``GOOGLE_GEMINI_BASE_URL``)."""
        if self._server is None:
            raise RuntimeError("FakeGemini is not running; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting ------------------------------------------------------------------------------

    def reply(
        self,
        *pieces: str,
        finish_reason: str | None = "STOP",
        chunk_delay: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        """Queue a successful answer streamed as one SSE chunk per piece.

        ``chunk_delay`` spaces the chunks out (to test that speech starts before the whole answer
        arrives); ``delay`` waits before the response headers (time-to-first-byte). The non-streaming
        endpoint answers the pieces joined into one part.
        """
        self._push(_Reply(tuple(pieces), finish_reason, chunk_delay, delay))

    def fail(self, status: int, *, retry_delay: str | None = None, message: str | None = None) -> None:
        """Queue an HTTP error with the real ``{"error": {code, message, status, details}}`` body.

        For 429 the body carries the QuotaFailure/Help details the real API sends, plus a
        ``google.rpc.RetryInfo`` with ``retryDelay`` (e.g. ``"53s"``) when ``retry_delay`` is given.
        """
        rpc_status, default_message = _RPC_STATUS.get(status, ("UNKNOWN", HTTPStatus(status).phrase))
        self._push(_Fail(status, message or default_message, rpc_status, retry_delay))

    def block_safety(self, *, prompt_blocked: bool = False) -> None:
        """Queue a safety block: a candidate with ``finishReason: SAFETY`` and no content.

        With ``prompt_blocked=True`` it is instead ``promptFeedback.blockReason: SAFETY`` and no
        candidates, which is how the API refuses the user's input rather than the model's output.
        """
        self._push(_Safety(prompt_blocked))

    def cut_stream(self, *pieces: str) -> None:
        """Queue a stream that sends ``pieces`` as chunks and then drops the connection mid-body.

        The body is chunk-encoded, so the client sees an incomplete message (an httpx
        ``RemoteProtocolError``) rather than a clean end of stream, like a real network cut.
        """
        self._push(_Cut(tuple(pieces) or ("Hello",)))

    def hang(self, seconds: float) -> None:
        """Queue a request that waits ``seconds`` before answering (with the default reply).

        For client-timeout tests. The wait ends early when the fake stops, so a test that times out
        never leaves a sleeping thread behind.
        """
        self._push(_Reply(self._default_pieces(), delay=seconds))

    def set_default_reply(self, *pieces: str) -> None:
        """Change what the fake answers when the script queue is empty."""
        with self._lock:
            self._default = _Reply(tuple(pieces))

    def clear(self) -> None:
        """Forget scripted answers and recorded requests (reusing one fake across tests)."""
        with self._lock:
            self._script.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        """How many scripted answers have not been consumed yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; raises AssertionError when there was none."""
        with self._lock:
            if not self._requests:
                raise AssertionError("FakeGemini received no requests")
            return self._requests[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (for code that calls Gemini in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.requests
            if len(snapshot) >= count:
                return snapshot
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} requests to FakeGemini, got {len(snapshot)}")
            time.sleep(0.01)

    # -- internals used by the handler -----------------------------------------------------------

    def _push(self, item: _Script) -> None:
        with self._lock:
            self._script.append(item)

    def _default_pieces(self) -> tuple[str, ...]:
        with self._lock:
            return self._default.pieces

    def _record(self, request: RecordedRequest, *, consume: bool) -> _Script:
        """Store the request and, when ``consume``, pop the next scripted behaviour."""
        with self._lock:
            self._requests.append(request)
            if consume and self._script:
                return self._script.popleft()
            return self._default

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the fake is stopping; returns False when it was interrupted."""
        return not self._stopping.wait(seconds) if seconds > 0 else True


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its connections so stop() can close idle keep-alives."""

    daemon_threads = True
    allow_reuse_address = True
    fake: FakeGemini

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a client hanging up mid-answer is a scenario under test, not a fake bug."""

    def close_all_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Translates one HTTP request into the scripted Gemini behaviour."""

    protocol_version = "HTTP/1.1"  # keep-alive + chunked bodies, like the real endpoint
    disable_nagle_algorithm = True  # small SSE chunks leave at once, as from the real endpoint (no 40 ms stalls)
    server: _Server
    error_content_type = "application/json"
    _SSE_HEADERS: ClassVar[dict[str, str]] = {
        "Content-Type": "text/event-stream",
        "Content-Disposition": "attachment",
        "Transfer-Encoding": "chunked",
    }

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; tests assert on ``requests`` instead."""

    def do_GET(self) -> None:
        """Only generation endpoints are faked; anything else is a Gemini-style 404."""
        self._read_body()
        self._send_error_json(404, "NOT_FOUND", f"Method not found: {self.path}", None)

    def do_POST(self) -> None:
        """Record the request, then play the next scripted behaviour."""
        try:
            self._handle_post()
        except OSError:
            # The client went away (e.g. it timed out during hang()); nothing left to tell it.
            self.close_connection = True

    def _handle_post(self) -> None:
        raw = self._read_body()
        split = urlsplit(self.path)
        match = _PATH_RE.match(split.path)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        recorded = RecordedRequest(
            method="POST",
            path=self.path,
            api_version=match["version"] if match else "",
            model=match["model"] if match else "",
            action=match["action"] if match else "",
            query={k: v[-1] for k, v in parse_qs(split.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body if isinstance(body, dict) else {},
            raw_body=raw,
        )
        fake = self.server.fake
        if not match or recorded.action not in ("generateContent", "streamGenerateContent"):
            fake._record(recorded, consume=False)  # recorded, but a 404 consumes no script entry
            self._send_error_json(404, "NOT_FOUND", f"Method not found: {split.path}", None)
            return
        script = fake._record(recorded, consume=True)
        if isinstance(script, _Fail):
            self._send_error_json(script.status, script.rpc_status, script.message, script.retry_delay)
            return
        prompt_tokens = max(1, len(raw) // 4)
        if isinstance(script, _Reply) and not fake._sleep(script.delay):
            self.close_connection = True
            return
        chunks = _chunks_for(script, prompt_tokens)
        if not recorded.streaming:
            self._send_json(200, _merge_chunks(chunks))
            return
        self._stream(chunks, script)

    # -- response writers -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error_json(self, status: int, rpc_status: str, message: str, retry_delay: str | None) -> None:
        error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
        details: list[dict[str, Any]] = []
        if status == 429:
            details += [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": _FREE_TIER_METRIC,
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaValue": "10",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
            ]
        if retry_delay is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
        if details:
            error["details"] = details
        self._send_json(status, {"error": error})

    def _stream(self, chunks: list[dict[str, Any]], script: _Script) -> None:
        self.send_response(200)
        for name, value in self._SSE_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        delay = script.chunk_delay if isinstance(script, _Reply) else 0.0
        fake = self.server.fake
        try:
            for index, chunk in enumerate(chunks):
                if index and not fake._sleep(delay):
                    break
                self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            if isinstance(script, _Cut):
                # Drop the connection without the terminating zero-length chunk.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._write_chunk(b"")
        except OSError:
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


def _chunks_for(script: _Reply | _Cut | _Safety, prompt_tokens: int) -> list[dict[str, Any]]:
    """Build the ``GenerateContentResponse`` JSON objects the real API would stream."""
    if isinstance(script, _Safety):
        usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        if script.prompt_blocked:
            return [
                {
                    "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _safety_ratings()},
                    "usageMetadata": usage,
                    "modelVersion": MODEL_VERSION,
                }
            ]
        return [
            {
                "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": _safety_ratings()}],
                "usageMetadata": usage,
                "modelVersion": MODEL_VERSION,
            }
        ]
    pieces = script.pieces
    finish_reason = script.finish_reason if isinstance(script, _Reply) else None
    chunks: list[dict[str, Any]] = []
    out_tokens = 0
    for index, text in enumerate(pieces or ("",)):
        out_tokens += max(1, len(text) // 4)
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL_VERSION}
        if index == len(pieces or ("",)) - 1 and finish_reason is not None:
            candidate["finishReason"] = finish_reason
            chunk["usageMetadata"] = {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": prompt_tokens + out_tokens,
            }
        chunks.append(chunk)
    return chunks


def _merge_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Collapse streamed chunks into the single body ``generateContent`` returns."""
    merged: dict[str, Any] = dict(chunks[-1])
    candidates = merged.get("candidates")
    if candidates:
        text = "".join(
            part.get("text", "")
            for chunk in chunks
            for cand in chunk.get("candidates", [])
            for part in cand.get("content", {}).get("parts", [])
        )
        candidate = dict(candidates[0])
        if "content" in candidate or text:
            candidate["content"] = {"role": "model", "parts": [{"text": text}]}
        merged["candidates"] = [candidate]
    return merged


def _safety_ratings() -> list[dict[str, Any]]:
    return [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
    ]
