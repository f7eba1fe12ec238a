"""Start and stop the dashboard inside the server process: uvicorn on its own port, in the server's event loop.

The socket is bound before anything else, so a port in use fails the start at once with a message that says
what to change. uvicorn's own signal handling is left out: `plush server` handles Ctrl+C and stops the
dashboard with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from plush.config import PlushConfig
from plush.errors import PlushError
from plush.logs import get_logger
from plush.server.companion import Companion
from plush.server.dashboard.fanout import TurnWakeups
from plush.server.dashboard.live import TurnFeed
from plush.server.dashboard.metrics import Metrics
from plush.server.dashboard.passwords import Passwords, password_file
from plush.server.dashboard.presence import Presence
from plush.server.dashboard.queries import TurnLog
from plush.server.dashboard.sessions import LoginThrottle, Sessions
from plush.server.dashboard.state import DashboardState
from plush.server.in_flight import TurnsInFlight
from plush.server.retention import audio_dir
from plush.server.shared_state import SharedState

log = get_logger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the server process owns its signals
        yield


@dataclass
class Dashboard:
    """A running dashboard; `url` is where to open it."""

    state: DashboardState
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    wakeups: TurnWakeups | None = None
    """With the replicas' Redis: wakes the live logs at another replica's turn."""

    @property
    def url(self) -> str:
        host = self.state.config.dashboard.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}/"

    async def stop(self) -> None:
        """End the live streams, then the web server, then the read-only connection."""
        with contextlib.suppress(ValueError):
            self.state.companion.listeners.remove(self.state.feed.on_turn)
        if self.wakeups is not None:
            await self.wakeups.stop()
        await self.state.feed.close()
        self.server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await self.task
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.state.turn_log.close()


async def start_dashboard(
    config: PlushConfig,
    companion: Companion,
    presence: Presence,
    in_flight: TurnsInFlight | None = None,
    shared: SharedState | None = None,
) -> Dashboard:
    """Serve the dashboard on `[dashboard] host:port` for the running `companion`; logins and the live log's
    wake-ups go through `shared` (the replicas' Redis) when there is one."""
    cfg = config.dashboard
    sock = _bind(cfg.host, cfg.port)
    env_password = config.dashboard_password.get_secret_value() if config.dashboard_password else None
    passwords = Passwords(password_file(config), env_password)
    database = config.server.database_location()
    feed = TurnFeed(Metrics(), audio_dir(config.server) if cfg.keep_audio else None)
    state = DashboardState(
        config=config,
        companion=companion,
        turn_log=await TurnLog.open(database),
        feed=feed,
        presence=presence,
        passwords=passwords,
        sessions=Sessions(cfg.session_hours * 3600, stamp=passwords.stamp, shared=shared),
        throttle=LoginThrottle(cfg.login_delay_s),
        metrics=feed.metrics,
        in_flight=in_flight,
    )
    from plush.server.dashboard.web import create_app

    app = create_app(state)
    server = _Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2,
            # Forwarded headers only from the proxies the owner named: anyone else could claim any address.
            proxy_headers=bool(cfg.trusted_proxies), forwarded_allow_ips=cfg.trusted_proxies or None,
        )
    )  # fmt: skip
    companion.keep_audio = companion.keep_audio or cfg.keep_audio
    companion.listeners.append(feed.on_turn)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="plush-dashboard")
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn sets a flag, it has no event
        await asyncio.sleep(0.01)
    if task.done():
        await state.turn_log.close()
        task.result()
        raise PlushError("the dashboard stopped as it started (see the log above)")
    port = sock.getsockname()[1]
    wakeups = TurnWakeups(feed, shared) if shared is not None else None
    if wakeups is not None:
        await wakeups.start()
    dashboard = Dashboard(state, server, task, port, wakeups)
    if not passwords.configured():
        log.warning("dashboard_without_password", url=dashboard.url, hint="run `plush dashboard set-password`")
    log.info("dashboard_started", url=dashboard.url, keep_audio=cfg.keep_audio)
    return dashboard


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PlushError(
            f"the dashboard cannot listen on {host}:{port}: {exc.strerror} "
            "(is another server running? set dashboard.port, or dashboard.enabled = false)"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
