"""A fake Telegram Bot API server on 127.0.0.1 that the real python-telegram-bot client talks to.

Why a server: the bridge's behaviour that matters (offsets, flood control, uploads and downloads, what exactly
reaches the chat) lives in the HTTP exchange, so the real `Application` polls this fake over a socket instead of
a patched `Bot`.

Usage::

    with FakeTelegram() as fake:
        app = (
            Application.builder().token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url).build()
        )
        fake.send_text(user_id=42, text="hello")
        fake.send_voice(user_id=42, data=ogg_bytes, duration=3)
        ...
        assert fake.texts_to(42) == ["Hi!"]
        assert fake.voices_to(42)[0].data.startswith(b"OggS")

Requests arrive as `POST /bot<TOKEN>/<method>` with form-encoded or multipart parameters (python-telegram-bot
JSON-encodes each value that is not a string; files are multipart parts) or a JSON body; replies are
`{"ok": true, "result": ...}`. Files are fetched the way the real API serves them: `getFile` gives a `file_path`,
and `GET /file/bot<TOKEN>/<file_path>` gives the bytes. Outages are scripted per call (`fail_next`), for a while
(`fail_for`), or for the whole network (`refuse_connections`).
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from fakes.telegram_http import ApiError, Upload, error_reply, handler, reply_to

TOKEN = "123456:TEST-token-abcd"
BOT = {"id": 123456, "is_bot": True, "first_name": "Plush", "username": "plush_test_bot"}
MAX_POLL_S = 1.0
"""The longest a getUpdates call waits here, so the client's shutdown is never held up for long."""
HANG_UP_CHECK_S = 0.05
"""How often a waiting getUpdates looks whether its client hung up."""
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
"""The real API's limit for a bot's downloads: getFile refuses bigger files with 400 "file is too big"."""


@dataclass
class Call:
    """One Bot API request as the fake received it."""

    method: str
    params: dict[str, Any]


@dataclass
class StoredFile:
    """A file the fake can serve: one a user sent, or one the bot uploaded."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    size: int
    """What Telegram states as `file_size` (a test may state more than `data` holds, to test the 20 MB limit)."""


@dataclass
class SentVoice:
    """A voice note the bot uploaded with sendVoice."""

    chat_id: int
    message_id: int
    data: bytes
    duration: int | None
    caption: str | None
    reply_to: int | None
    filename: str | None


class FakeTelegram:
    """The Bot API methods the bridge uses, with scripted failures (`fail_next`, `fail_for`, `refuse_connections`)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[int, dict[str, Any]] = {}
        """Messages the bot sent (and their edits), by message id."""
        self.voices: list[SentVoice] = []
        self.files: dict[str, StoredFile] = {}
        """Every file the fake serves, by file_id."""
        self.downloads: list[str] = []
        """The file_path of each file downloaded, in order."""
        self.failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.outages: dict[str, tuple[float, int, dict[str, Any]]] = {}
        """method -> (until, status, parameters): every call fails until `until` (time.monotonic)."""
        self.chats: dict[int, dict[str, Any]] = {}
        self.most_polls_at_once = 0
        """The most long polls (getUpdates with a timeout) ever waiting together for clients still connected: more
        than 1 means two pollers at once (Telegram would refuse one with 409 Conflict). A poll its client gave up
        on does not count, nor the quick getUpdates (timeout 0) that confirms the last updates as a poller stops."""
        self._polls: list[Callable[[], bool]] = []
        self._next_update = 1
        self._next_message = 1000
        self._file_numbers = itertools.count(1)
        self._lock = threading.Condition()
        self._serving = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._closed = False
        self.port = 0
        self._listen()

    @property
    def base_url(self) -> str:
        """For `ApplicationBuilder.base_url` (the token is appended)."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For `ApplicationBuilder.base_file_url` (the token is appended, then `/<file_path>`)."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    def __enter__(self) -> FakeTelegram:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        with self._serving:
            self._closed = True
            self._close()

    # --- what a test scripts -------------------------------------------------------------------------------

    def send_text(
        self, user_id: int, text: str, *, chat_id: int | None = None, chat_type: str = "private", title: str = ""
    ) -> int:
        """A message from `user_id` (a leading /command gets its entity); returns its update id. The chat is the
        user's private chat unless `chat_id` (negative for groups) with `chat_type` "group"/"supergroup"."""
        message: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split(maxsplit=1)[0])}]
        return self._incoming(user_id, message, chat_id, chat_type, title)

    def send_voice(
        self,
        user_id: int,
        data: bytes,
        *,
        duration: int | None = None,
        mime_type: str = "audio/ogg",
        file_size: int | None = None,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        title: str = "",
    ) -> int:
        """A voice note (what the microphone button records) holding `data`; returns its update id. `duration`
        defaults to the audio's own length as Telegram's client states it (whole seconds); `file_size` may state
        more than `data` holds."""
        stored = self._store(data, "voice", "oga", file_size)
        voice = {**self._file_fields(stored), "duration": _seconds(data) if duration is None else duration}
        message: dict[str, Any] = {"voice": {**voice, "mime_type": mime_type}}
        if caption is not None:
            message["caption"] = caption
        return self._incoming(user_id, message, chat_id, chat_type, title)

    def send_audio_file(
        self,
        user_id: int,
        data: bytes,
        *,
        file_name: str = "recording.mp3",
        mime_type: str = "audio/mpeg",
        kind: Literal["document", "audio"] = "document",
        file_size: int | None = None,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        title: str = "",
    ) -> int:
        """An audio file sent from the attachment menu: as a `document` (the file picker) or as `audio` (the
        music picker, which carries a duration); returns its update id."""
        stored = self._store(
            data, "documents" if kind == "document" else "music", file_name.rsplit(".", 1)[-1], file_size
        )
        attachment = {**self._file_fields(stored), "file_name": file_name, "mime_type": mime_type}
        if kind == "audio":
            attachment["duration"] = _seconds(data)
        message: dict[str, Any] = {kind: attachment}
        if caption is not None:
            message["caption"] = caption
        return self._incoming(user_id, message, chat_id, chat_type, title)

    def fail_next(self, method: str, status: int, **parameters: Any) -> None:
        """The next call of `method` fails with HTTP `status` (e.g. 429 with retry_after=1)."""
        self.failures.setdefault(method, []).append((status, parameters))

    def fail_for(self, method: str, status: int, seconds: float = 3600.0, **parameters: Any) -> None:
        """Every call of `method` fails with HTTP `status` for `seconds` (or until `recover`)."""
        with self._lock:
            self.outages[method] = (time.monotonic() + seconds, status, parameters)

    def recover(self, method: str | None = None) -> None:
        """End `fail_for` outages (of `method`, or all)."""
        with self._lock:
            for name in [method] if method else list(self.outages):
                self.outages.pop(name, None)

    def refuse_connections(self, seconds: float | None = None) -> None:
        """Close the listening socket, so every request fails to connect (as with no network), for `seconds` or
        until `accept_connections`. Requests already being answered finish."""
        with self._serving:
            self._close()
        if seconds is not None:
            timer = threading.Timer(seconds, self.accept_connections)
            timer.daemon = True
            timer.start()

    def accept_connections(self) -> None:
        """Listen again on the same port."""
        self._listen()

    def texts_to(self, chat_id: int) -> list[str]:
        """The final text of each text message the bot sent to `chat_id`, in order."""
        with self._lock:
            return [m["text"] for m in self.messages.values() if m["chat"]["id"] == chat_id and "text" in m]

    def voices_to(self, chat_id: int) -> list[SentVoice]:
        """The voice notes the bot sent to `chat_id`, in order."""
        with self._lock:
            return [v for v in self.voices if v.chat_id == chat_id]

    def calls_to(self, method: str, chat_id: int | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == method and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)
            ]

    # --- the API -------------------------------------------------------------------------------------------

    def handle(
        self, method: str, params: dict[str, Any], hung_up: Callable[[], bool] = lambda: False
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls.append(Call(method, params))
            failure = self.failures[method].pop(0) if self.failures.get(method) else None
            outage = self.outages.get(method)
            if failure is None and outage is not None and time.monotonic() < outage[0]:
                failure = outage[1:]
            if failure is not None:
                return error_reply(*failure)
        if method == "getUpdates":
            long_poll = float(params.get("timeout", 0) or 0) > 0
            with self._lock:
                if long_poll:
                    self._polls.append(hung_up)
                    connected = sum(1 for gone in self._polls if not gone())
                    self.most_polls_at_once = max(self.most_polls_at_once, connected)
            try:
                return 200, {"ok": True, "result": self._get_updates(params, hung_up)}
            finally:
                with self._lock:
                    if long_poll:
                        self._polls.remove(hung_up)
        with self._lock:
            try:
                result = self._answer(method, params)
            except ApiError as exc:
                return error_reply(exc.status, {"description": exc.description})
        if result is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        return 200, {"ok": True, "result": result}

    def download(self, file_path: str) -> bytes | None:
        """The bytes at `/file/bot<token>/<file_path>`, or None (404)."""
        with self._lock:
            self.downloads.append(file_path)
            return next((f.data for f in self.files.values() if f.file_path == file_path), None)

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        if method in ("getMe", "setWebhook", "deleteWebhook", "setMyCommands", "sendChatAction"):
            return BOT if method == "getMe" else True
        if method == "sendMessage":
            return self._sent(int(params["chat_id"]), {"text": params["text"]}, params)
        if method == "editMessageText":
            message = self.messages[int(params["message_id"])]
            message["text"] = params["text"]
            return message
        if method == "getFile":
            stored = self.files.get(str(params.get("file_id")))
            if stored is None:
                raise ApiError(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
            if stored.size > MAX_DOWNLOAD_BYTES:
                raise ApiError(400, "Bad Request: file is too big")
            return {**self._file_fields(stored), "file_path": stored.file_path}
        if method == "sendVoice":
            return self._send_voice(params)
        return None

    def _send_voice(self, params: dict[str, Any]) -> dict[str, Any]:
        voice, filename = params.get("voice"), None
        if isinstance(voice, Upload):
            stored, filename = self._store(voice.data, "voice", "oga", None), voice.filename
        elif isinstance(voice, str) and voice in self.files:  # a file_id sent again
            stored = self.files[voice]
        else:
            raise ApiError(400, "Bad Request: there is no voice in the request")
        duration = int(params["duration"]) if params.get("duration") is not None else None
        fields = {"voice": {**self._file_fields(stored), "duration": duration or 0, "mime_type": "audio/ogg"}}
        if params.get("caption") is not None:
            fields["caption"] = params["caption"]
        message = self._sent(int(params["chat_id"]), fields, params)
        self.voices.append(
            SentVoice(
                chat_id=message["chat"]["id"],
                message_id=message["message_id"],
                data=stored.data,
                duration=duration,
                caption=params.get("caption"),
                reply_to=reply_to(params),
                filename=filename,
            )
        )
        return message

    def _sent(self, chat_id: int, fields: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A message from the bot, recorded and returned as the API returns it."""
        message = {
            "message_id": self._next_message,
            "date": int(time.time()),
            "chat": self.chats.get(chat_id, {"id": chat_id, "type": "private"}),
            "from": BOT,
            **fields,
        }
        if (answered := reply_to(params)) is not None:
            message["reply_to_message"] = {"message_id": answered, "date": 0, "chat": message["chat"]}
        self._next_message += 1
        self.messages[message["message_id"]] = message
        return message

    def _incoming(self, user_id: int, fields: dict[str, Any], chat_id: int | None, chat_type: str, title: str) -> int:
        user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if chat_type == "private":
            chat: dict[str, Any] = {"id": user_id if chat_id is None else chat_id, "type": "private"}
            chat["first_name"] = user["first_name"]
        else:
            if chat_id is None:
                raise ValueError("a group message needs the group's chat_id (negative)")
            chat = {"id": chat_id, "type": chat_type, "title": title or f"group{-chat_id}"}
        with self._lock:
            self.chats[chat["id"]] = chat
            update_id = self._next_update
            self._next_update += 1
            message = {"message_id": update_id, "date": int(time.time()), "chat": chat, "from": user, **fields}
            self.updates.append({"update_id": update_id, "message": message})
            self._lock.notify_all()
        return update_id

    def _store(self, data: bytes, folder: str, extension: str, size: int | None) -> StoredFile:
        number = next(self._file_numbers)
        stored = StoredFile(
            file_id=f"FILE{number:04d}-{folder}",
            file_unique_id=f"U{number:04d}",
            file_path=f"{folder}/file_{number}.{extension}",
            data=data,
            size=len(data) if size is None else size,
        )
        with self._lock:
            self.files[stored.file_id] = stored
        return stored

    @staticmethod
    def _file_fields(stored: StoredFile) -> dict[str, Any]:
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.size}

    def _get_updates(self, params: dict[str, Any], hung_up: Callable[[], bool]) -> list[dict[str, Any]]:
        """Updates from `offset` on (earlier ones are confirmed and dropped), waiting up to `timeout`, or until the
        client hangs up (as Telegram's server stops a long poll whose connection closed)."""
        offset = int(params.get("offset", 0) or 0)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), MAX_POLL_S)
        with self._lock:
            while True:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if self.updates or time.monotonic() >= deadline:
                    return list(self.updates[: int(params.get("limit", 100) or 100)])
                if hung_up():
                    return []
                self._lock.wait(min(HANG_UP_CHECK_S, deadline - time.monotonic()))

    def _listen(self) -> None:
        with self._serving:
            if self._server is not None or self._closed:
                return
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler(self))
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _seconds(data: bytes) -> int:
    """Whole seconds of audio as Telegram's client states them (0 when the bytes are not audio)."""
    import av

    try:
        with av.open(io.BytesIO(data), "r") as container:
            return round((container.duration or 0) / 1_000_000)
    except (av.FFmpegError, ValueError, OSError):
        return 0
