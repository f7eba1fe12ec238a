"""The HTTP side of the fake Bot API (fakes/telegram.py): routes, and parameters parsed the way Telegram reads them.

Kept apart from the fake's state so each file reads on its own: this one knows URLs, form encodings and multipart
uploads; `FakeTelegram` knows chats, messages and files.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

RAW_FIELDS = ("text", "caption")
"""Parameters kept as sent (JSON-decoding a message "42" would make it a number)."""


@dataclass
class Upload:
    """A file part of a multipart request."""

    data: bytes
    filename: str | None


class ApiError(Exception):
    """A Bot API error a method answers with (HTTP `status`, Telegram's `description`)."""

    def __init__(self, status: int, description: str) -> None:
        self.status, self.description = status, description


def error_reply(status: int, extra: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Telegram's error body: `description`, and `parameters.retry_after` for flood control."""
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": f"fake error {status}"}
    body["description"] = extra.get("description", body["description"])
    if "retry_after" in extra:
        body["parameters"] = {"retry_after": extra["retry_after"]}
        body["description"] = f"Too Many Requests: retry after {extra['retry_after']}"
    return status, body


def reply_to(params: dict[str, Any]) -> int | None:
    """The message a request answers: `reply_parameters` (what PTB 22 sends) or the older `reply_to_message_id`."""
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and reply.get("message_id") is not None:
        return int(reply["message_id"])
    return int(params["reply_to_message_id"]) if params.get("reply_to_message_id") is not None else None


class BotApi(Protocol):
    token: str

    def handle(
        self, method: str, params: dict[str, Any], hung_up: Callable[[], bool] = ...
    ) -> tuple[int, dict[str, Any]]: ...

    def download(self, file_path: str) -> bytes | None: ...


def handler(api: BotApi) -> type[BaseHTTPRequestHandler]:
    """`POST /bot<token>/<method>` -> `api.handle`; `GET /file/bot<token>/<file_path>` -> `api.download`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            prefix = f"/bot{api.token}/"
            if not self.path.startswith(prefix):
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = api.handle(
                self.path.removeprefix(prefix), parse_params(body, self.headers["Content-Type"]), self._hung_up
            )
            self._reply(status, answer)

        def _hung_up(self) -> bool:
            """Whether the client closed the connection (as a long poll it gave up on does)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def do_GET(self) -> None:
            prefix, path = f"/file/bot{api.token}/", unquote(self.path)  # PTB percent-encodes the token's ':'
            data = api.download(path.removeprefix(prefix)) if path.startswith(prefix) else None
            if data is None:
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            self._send(200, data, "application/octet-stream")

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a long poll the client gave up
                self.wfile.write(data)

    return Handler


def parse_params(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A request's parameters: JSON-encoded values decoded (PTB encodes all but strings), uploads as `Upload`."""
    if not body:
        return {}
    if content_type and content_type.startswith("application/json"):
        return dict(json.loads(body))
    if content_type and content_type.startswith("multipart/form-data"):
        fields = _multipart(body, content_type)
    else:
        fields = {key: values[0] for key, values in parse_qs(body.decode()).items()}
    params: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Upload) or key in RAW_FIELDS:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _multipart(body: bytes, content_type: str) -> dict[str, str | Upload]:
    """multipart/form-data fields: text values as str, file parts (those with a filename) as `Upload`."""
    boundary = str(_headers([f"Content-Type: {content_type}"]).get_param("boundary"))
    fields: dict[str, str | Upload] = {}
    for part in body.split(b"--" + boundary.encode())[1:-1]:
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = _headers(head.decode().split("\r\n"))
        name = str(headers.get_param("name", header="content-disposition"))
        filename = headers.get_param("filename", header="content-disposition")
        fields[name] = Upload(content, str(filename)) if filename is not None else content.decode()
    return fields


def _headers(lines: list[str]) -> Message:
    headers = Message()
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers
