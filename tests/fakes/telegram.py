"""A fake Telegram Bot API server on 127.0.0.1 that the real python-telegram-bot client talks to.

Why a server: the bridge's behaviour that matters (offsets, flood control, what exactly reaches the chat) lives
in the HTTP exchange, so the real `Application` polls this fake over a socket instead of a patched `Bot`.

Usage::

    with FakeTelegram() as fake:
        app = Application.builder().token(fake.token).base_url(fake.base_url).build()
        fake.send_text(user_id=42, text="hello")
        ...
        assert fake.messages_to(42) == ["Hi!"]

Requests arrive as `POST /bot<TOKEN>/<method>` with form-encoded parameters (python-telegram-bot JSON-encodes
each value that is not a string) or a JSON body; replies are `{"ok": true, "result": ...}`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

TOKEN = "123456:TEST-token-abcd"
BOT = {"id": 123456, "is_bot": True, "first_name": "Plush", "username": "plush_test_bot"}
MAX_POLL_S = 1.0
"""The longest a getUpdates call waits here, so the client's shutdown is never held up for long."""


@dataclass
class Call:
    """One Bot API request as the fake received it."""

    method: str
    params: dict[str, Any]


class FakeTelegram:
    """The Bot API methods the bridge uses, with scripted failures (`fail_next`)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[int, dict[str, Any]] = {}
        """Messages the bot sent (and their edits), by message id."""
        self.failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._next_update = 1
        self._next_message = 1000
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    def __enter__(self) -> FakeTelegram:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what a test scripts -------------------------------------------------------------------------------

    def send_text(self, user_id: int, text: str) -> int:
        """A private-chat message from `user_id` (a leading /command gets its entity); returns its update id."""
        message: dict[str, Any] = {
            "message_id": self._next_update,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": f"user{user_id}"},
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split(maxsplit=1)[0])}]
        with self._lock:
            update_id = self._next_update
            self._next_update += 1
            self.updates.append({"update_id": update_id, "message": message})
            self._lock.notify_all()
        return update_id

    def fail_next(self, method: str, status: int, **parameters: Any) -> None:
        """The next call of `method` fails with HTTP `status` (e.g. 429 with retry_after=1)."""
        self.failures.setdefault(method, []).append((status, parameters))

    def texts_to(self, chat_id: int) -> list[str]:
        """The final text of each message the bot sent to `chat_id`, in order."""
        with self._lock:
            return [m["text"] for m in self.messages.values() if m["chat"]["id"] == chat_id]

    def calls_to(self, method: str, chat_id: int | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == method and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)
            ]

    # --- the API -------------------------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls.append(Call(method, params))
            if self.failures.get(method):
                status, extra = self.failures[method].pop(0)
                body: dict[str, Any] = {"ok": False, "error_code": status, "description": f"fake error {status}"}
                if "retry_after" in extra:
                    body["parameters"] = {"retry_after": extra["retry_after"]}
                    body["description"] = f"Too Many Requests: retry after {extra['retry_after']}"
                return status, body
        if method == "getUpdates":
            return 200, {"ok": True, "result": self._get_updates(params)}
        with self._lock:
            result = self._answer(method, params)
        if result is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        return 200, {"ok": True, "result": result}

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT
        if method in ("deleteWebhook", "setMyCommands", "sendChatAction"):
            return True
        if method == "sendMessage":
            chat_id = int(params["chat_id"])
            message = {
                "message_id": self._next_message,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT,
                "text": params["text"],
            }
            self._next_message += 1
            self.messages[message["message_id"]] = message
            return message
        if method == "editMessageText":
            message = self.messages[int(params["message_id"])]
            message["text"] = params["text"]
            return message
        return None

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Updates from `offset` on (earlier ones are confirmed and dropped), waiting up to `timeout`."""
        offset = int(params.get("offset", 0) or 0)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), MAX_POLL_S)
        with self._lock:
            while True:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if self.updates or time.monotonic() >= deadline:
                    return list(self.updates[: int(params.get("limit", 100) or 100)])
                self._lock.wait(deadline - time.monotonic())


def _handler(fake: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            prefix = f"/bot{fake.token}/"
            if not self.path.startswith(prefix):
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            status, answer = fake.handle(self.path.removeprefix(prefix), _params(body, self.headers["Content-Type"]))
            self._reply(status, answer)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a long poll the client gave up
                self.wfile.write(data)

    return Handler


def _params(body: str, content_type: str | None) -> dict[str, Any]:
    if not body:
        return {}
    if content_type and content_type.startswith("application/json"):
        return dict(json.loads(body))
    params: dict[str, Any] = {}
    for key, values in parse_qs(body).items():
        if key == "text":  # a message's text is sent as it is (JSON-decoding "42" would make it a number)
            params[key] = values[0]
            continue
        try:
            params[key] = json.loads(values[0])
        except json.JSONDecodeError:
            params[key] = values[0]
    return params
