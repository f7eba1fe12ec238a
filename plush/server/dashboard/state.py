"""What the dashboard's routes work with: the running server's companion (store, router, persona), the read-only
turn log, the live feed, presence, sessions; and the few changes an owner makes (facts, resets, the persona),
each checked the way the command line checks it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from plush.config import PlushConfig
from plush.errors import ConfigError, PlushError
from plush.owners import LEGACY_OWNER, Owners
from plush.server.companion import Companion
from plush.server.dashboard.live import TurnFeed
from plush.server.dashboard.metrics import Metrics
from plush.server.dashboard.passwords import Passwords
from plush.server.dashboard.presence import Presence
from plush.server.dashboard.queries import LoggedTurn, TurnLog
from plush.server.dashboard.sessions import LoginThrottle, Sessions
from plush.server.in_flight import TurnsInFlight
from plush.server.llm.gemini_budget import REQUESTS_KEY, pacific_day
from plush.server.persona import BUILT_IN, Persona, PersonaSource, load_persona
from plush.server.store import Fact


@dataclass
class DashboardState:
    config: PlushConfig
    companion: Companion
    turn_log: TurnLog
    feed: TurnFeed
    presence: Presence
    passwords: Passwords
    sessions: Sessions
    throttle: LoginThrottle
    metrics: Metrics
    in_flight: TurnsInFlight | None = None
    started_at: float = field(default_factory=time.time)

    # -- reading -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        persona = self.companion.persona
        return {
            "brain": self.companion.router.description,
            "voices": self.companion.speech.description() if self.companion.speech is not None else "",
            "persona": persona.name,
            "persona_source": persona.source,
            "turns_in_flight": self.in_flight.count if self.in_flight is not None else 0,
            "online": self.presence.online_count(self.config.dashboard.online_window_s),
            "started_at": self.started_at,
        }

    async def gemini(self) -> dict[str, Any]:
        """Gemini use against each configured budget (`configured` is False without an API key)."""
        cfg = self.config.llm.gemini
        budget = self.companion.router.budget
        today = pacific_day(datetime.now(UTC))
        requests, tokens = await self.turn_log.gemini_last_minute()
        return {
            "configured": budget is not None,
            "model": cfg.model,
            "day": today,
            "requests_today": await self.companion.store.usage(today, REQUESTS_KEY),
            "requests_per_day": cfg.requests_per_day,
            "last_minute": {"requests": requests, "tokens": tokens},
            "requests_per_minute": cfg.requests_per_minute,
            "tokens_per_minute": cfg.tokens_per_minute,
            "client_share": cfg.client_share,
            "days": [{"day": d, "requests": n} for d, n in await self.turn_log.gemini_days()],
            "clients": [{"client": c, "requests": n} for c, n in await self.turn_log.gemini_clients(today)],
            "paused_for_s": round(budget.paused_for(), 1) if budget is not None else 0.0,
            "circuit_open_for_s": round(budget.breaker.seconds_left(), 1) if budget is not None else 0.0,
        }

    async def devices(self) -> list[dict[str, Any]]:
        """Every plush and client the server knows: paired, seen since the start, or in the turn log."""
        window = self.config.dashboard.online_window_s
        paired = {p.name: p.paired_at for p in await self.companion.store.pairings()}
        tokens = set(self.config.allowed_devices())
        logged = await self.turn_log.devices()
        now = time.time()
        rows = []
        for device in sorted(set(paired) | tokens | set(logged) | {s.device_id for s in self.presence.sightings()}):
            seen = self.presence.get(device)
            info = logged.get(device, {})
            last = max(seen.last_seen if seen else 0.0, info.get("last_turn_at") or 0.0)
            rows.append(
                {
                    "id": device,
                    "paired_at": paired.get(device, ""),
                    "has_token": device in tokens,
                    "online": bool(seen and seen.online(window, now)),
                    "calls_open": seen.open_calls if seen else 0,
                    "last_seen": last or None,
                    "address": seen.address if seen else "",
                    "version": seen.version if seen else "",
                    "calls": seen.calls if seen else 0,
                    "turns": info.get("turns", 0),
                    "errors": info.get("errors", []),
                }
            )
        rows.sort(key=lambda r: (not r["online"], -(r["last_seen"] or 0)))
        return rows

    def trace_of(self, logged: LoggedTurn) -> dict[str, Any]:
        """The prompt and stage start times kept for a turn since the server started (None for older turns)."""
        trace = self.feed.trace(logged.record.id)
        prompt = None
        if trace is not None and trace.prompt is not None:
            prompt = {
                "system": trace.prompt.system,
                "history": [{"role": m.role, "text": m.text} for m in trace.prompt.history],
                "memory": trace.prompt.memory,
                "user": trace.prompt.user,
            }
        return {"prompt": prompt, "stages": dict(trace.stages) if trace is not None else {}}

    # -- memory --------------------------------------------------------------------------------------------------

    async def owners(self) -> list[str]:
        """Owners a fact may be given: the households, then the others the database knows."""
        owners = Owners(self.config.owners)
        seen = {c.owner for c in await self.companion.store.list_conversations()}
        seen |= {f.owner for f in await self.companion.store.all_facts()}
        others = sorted(o for o in seen if o and o != LEGACY_OWNER and o not in owners.households)
        return [*owners.households, *others]

    async def add_fact(self, text: str, owner: str) -> Fact:
        if not " ".join(text.split()):
            raise PlushError("a fact needs some text")
        seen = [c.owner for c in await self.companion.store.list_conversations()]
        checked = Owners(self.config.owners).check(owner.strip(), seen)
        return await self.companion.store.add_fact(text, source="dashboard", owner=checked)

    async def reset_conversation(self, conversation_id: str) -> None:
        known = [c.id for c in await self.companion.store.list_conversations()]
        if conversation_id not in known:
            raise PlushError(f"there is no conversation '{conversation_id}'")
        await self.companion.store.reset_conversation(conversation_id)

    # -- persona -------------------------------------------------------------------------------------------------

    def persona_file(self) -> Path | None:
        """The persona file the server reads (None for a built-in persona, which cannot be edited in place)."""
        spec = self.companion.personas.spec
        return None if spec in BUILT_IN else Path(spec).expanduser()

    def persona_text(self) -> str:
        path = self.persona_file()
        if path is None:
            name = self.companion.personas.spec
            return resources.files("plush.server").joinpath("personas", f"{name}.toml").read_text(encoding="utf-8")
        return path.read_text(encoding="utf-8")

    def save_persona(self, text: str) -> Persona:
        """Check `text` as `plush persona check` does and, only when it loads, replace the file with it; the
        server uses it from the next turn. A ConfigError names what to fix and leaves the file as it was."""
        path = self.persona_file()
        if path is None:
            raise ConfigError("the built-in persona cannot be changed: make an editable copy first")
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            try:
                load_persona(temp)
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(temp, str(path))) from None
            os.replace(temp, path)
        finally:
            Path(temp).unlink(missing_ok=True)
        return self.companion.personas.current()

    def copy_builtin_persona(self) -> Path:
        """Write the built-in persona to a file in the server's data folder and use that file from now on."""
        name = self.companion.personas.spec
        target = self.config.server.data_folder() / f"persona-{name}.toml"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.persona_text(), encoding="utf-8")
        self.companion.personas = PersonaSource(str(target))
        return target
