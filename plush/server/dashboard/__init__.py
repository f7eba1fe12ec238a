"""The server dashboard: every turn live, its waterfall and prompt, charts, devices, memory and persona, and
Prometheus metrics; served by `plush server` on its own port, behind a login (see runner.py).

Importing this package loads nothing heavy: the web framework loads only when the dashboard starts, so a server
installed without the `dashboard` extra runs with `[dashboard] enabled = false`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plush.errors import PlushError
from plush.server.dashboard.presence import Presence

if TYPE_CHECKING:
    from plush.config import PlushConfig
    from plush.server.companion import Companion
    from plush.server.dashboard.runner import Dashboard
    from plush.server.in_flight import TurnsInFlight
    from plush.server.shared_state import SharedState

__all__ = ["Presence", "start_dashboard"]


async def start_dashboard(
    config: PlushConfig,
    companion: Companion,
    presence: Presence,
    in_flight: TurnsInFlight | None = None,
    shared: SharedState | None = None,
) -> Dashboard | None:
    """Start the dashboard when `[dashboard] enabled` (None otherwise); stop it with `await dashboard.stop()`."""
    if not config.dashboard.enabled:
        return None
    try:
        from plush.server.dashboard.runner import start_dashboard as start
    except ImportError as exc:
        raise PlushError(
            f"the dashboard needs packages that are not installed ({exc.name}): pip install 'plush[dashboard]', "
            "or set [dashboard] enabled = false"
        ) from exc
    return await start(config, companion, presence, in_flight, shared)
