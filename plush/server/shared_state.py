"""What several server replicas share besides the database: one Redis connection, opened once per process.

`[server] redis = "redis://host:6379/0"` turns it on; unset, every part keeps its state in this process, as a
single home server always has. Each part that replicas must agree on takes a `SharedState` (or None) and uses
its client: the Gemini budgets (`limits`' Redis storage on this client's pool), dashboard logins, presence, the
live log's fan-out (pub/sub) and the Telegram poller's lease. Keys all start with `plush:` so one Redis can be
shared with other programs, and `replica` names this process to the others (a lease's holder, a presence entry).

The client is redis-py's asyncio client: the one `limits` can use (`implementation="redispy"`), so one library
and one connection pool serve every part. A URL that cannot be reached fails the start with a message that says
which URL and why, instead of failing the first turn.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from plush.errors import PlushError

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX = "plush:"
CONNECT_TIMEOUT_S = 5.0
"""How long the start waits for Redis to answer before it says it cannot be reached."""


def shown_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class SharedState:
    """The open Redis client and this replica's name."""

    client: Redis
    url: str
    replica: str

    @classmethod
    async def connect(cls, url: str) -> SharedState:
        """Open the client and check that Redis answers; a PlushError that names the URL otherwise."""
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise PlushError(f"server.redis must be a redis://, rediss:// or unix:// URL, not {shown_url(url)!r}")
        try:
            from redis.asyncio import Redis
            from redis.exceptions import RedisError
        except ModuleNotFoundError as exc:
            raise PlushError(
                f"server.redis is set but the Redis client is not installed: pip install 'plush[redis]' ({exc})"
            ) from exc
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, health_check_interval=30)
        try:
            await client.ping()  # type: ignore[misc]  # redis-py types async and sync commands alike
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise PlushError(
                f"cannot reach Redis at {shown_url(url)} ({exc}): start it, or unset server.redis "
                "to keep the shared state in this process"
            ) from exc
        replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(client, url, replica)

    @staticmethod
    def key(*parts: str) -> str:
        """A Redis key in Plush's namespace: key("lease", "telegram") -> "plush:lease:telegram"."""
        return PREFIX + ":".join(parts)

    async def close(self) -> None:
        await self.client.aclose()
