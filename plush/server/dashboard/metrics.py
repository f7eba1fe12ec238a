"""Prometheus metrics at `/metrics`, made with the official client library on a registry of this server's own
(two servers in one process, as in the tests, never share counters).

Counters and histograms follow the turns stored since the server started; the gauges (Gemini use against each
budget, plushes online, turns in flight) are read fresh at each scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plush.config import GeminiConfig
from plush.server.store import TurnRecord

STAGE_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metrics; `observe` each stored turn, `refresh` the gauges, then `render`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.turns = Counter(
            "plush_turns", "Turns stored, by source, brain and outcome.", ["source", "backend", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "plush_turn_errors", "Turns that met an error, by source.", ["source"], registry=self.registry
        )
        self.stages = Histogram(
            "plush_stage_latency_seconds", "Time each stage of a turn took.", ["stage"],
            buckets=STAGE_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "plush_llm_tokens", "Tokens the brains read and wrote.", ["backend", "kind"], registry=self.registry
        )
        self.budget = Gauge(
            "plush_gemini_budget", "Each configured Gemini budget (0: no limit).", ["budget"], registry=self.registry
        )
        self.budget_used = Gauge(
            "plush_gemini_budget_used", "What is used of each Gemini budget now.", ["budget"], registry=self.registry
        )
        self.online = Gauge(
            "plush_connected_plushes", "Plushes with a call open or seen within the online window.",
            registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge("plush_turns_in_flight", "Turns being answered now.", registry=self.registry)

    def observe(self, turn: TurnRecord) -> None:
        self.turns.labels(turn.source, turn.backend or "none", turn.outcome).inc()
        if turn.error or turn.outcome in ("error", "refused"):
            self.errors.labels(turn.source).inc()
        for stage, ms in turn.timings.items():
            self.stages.labels(stage).observe(max(0.0, ms) / 1000)
        if turn.backend:
            self.tokens.labels(turn.backend, "prompt").inc(turn.prompt_tokens)
            self.tokens.labels(turn.backend, "output").inc(turn.output_tokens)

    def refresh(
        self,
        gemini: GeminiConfig | None,
        *,
        requests_today: int,
        last_minute: tuple[int, int],
        online: int,
        in_flight: int,
    ) -> None:
        self.online.set(online)
        self.in_flight.set(in_flight)
        if gemini is None:
            return
        for name, limit, used in (
            ("requests_per_day", gemini.requests_per_day, requests_today),
            ("requests_per_minute", gemini.requests_per_minute, last_minute[0]),
            ("tokens_per_minute", gemini.tokens_per_minute, last_minute[1]),
        ):
            self.budget.labels(name).set(limit)
            self.budget_used.labels(name).set(used)

    def render(self) -> bytes:
        return generate_latest(self.registry)
