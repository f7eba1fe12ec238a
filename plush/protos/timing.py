"""The waits both ends of the contract agree on, kept in one place: the plush (plush/device) and the server
(plush/server) import them from here, never from each other.

After TurnDone the plush sends PlaybackStarted (if its speaker has not started yet, it waits a moment for it) and
then closes its side of the stream; the server waits a moment for that report before it closes the turn.
"""

from __future__ import annotations

PLAYBACK_REPORT_S = 1.0
"""How long a finished turn waits on the server for the plush's PlaybackStarted (a plush that never sends it costs
this)."""

PLUSH_PLAYBACK_WAIT_S = PLAYBACK_REPORT_S - 0.2
"""How long the plush waits for its speaker to start before it closes the turn's stream: inside the server's wait,
so a report sent at its end still arrives while the server listens."""
