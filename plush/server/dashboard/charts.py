"""The charts' numbers, computed from the turn log: latency percentiles per stage per hour, turns per hour by
source, the share answered locally, Gemini use against each configured budget, and what starting the brain before
the release (speculation) adopted and wasted.

Kept apart from the web layer so the arithmetic is plain functions over records, tested without a browser.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from plush.server.store import TurnRecord

HOUR_S = 3600.0
STAGES = ("stt", "llm_first_token", "first_audio", "llm", "tts", "total")
"""Stages charted, in the order a turn goes through them."""
PERCENTILES = (50, 90, 99)
LOCAL_BACKENDS = ("llama", "fallback_line")


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (`values` need not be sorted; empty gives 0)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def hour_of(moment: float) -> float:
    return math.floor(moment / HOUR_S) * HOUR_S


def chart_data(turns: list[TurnRecord], start: float, end: float) -> dict[str, Any]:
    """Series for the charts page, hours from `start` to `end` (epoch seconds, each hour's start)."""
    hours = [hour_of(start) + i * HOUR_S for i in range(int((hour_of(end) - hour_of(start)) / HOUR_S) + 1)]
    by_hour: dict[float, list[TurnRecord]] = defaultdict(list)
    for turn in turns:
        by_hour[hour_of(turn.started_at)].append(turn)
    sources = sorted({t.source for t in turns})
    latency: dict[str, dict[str, list[float | None]]] = {}
    for stage in STAGES:
        series: dict[str, list[float | None]] = {f"p{p}": [] for p in PERCENTILES}
        for hour in hours:
            values = [t.timings[stage] for t in by_hour.get(hour, []) if stage in t.timings]
            for p in PERCENTILES:
                series[f"p{p}"].append(round(percentile(values, p), 1) if values else None)
        if any(v is not None for v in series["p50"]):
            latency[stage] = series
    answered = [t for t in turns if t.backend]
    local = sum(1 for t in answered if t.backend in LOCAL_BACKENDS)
    return {
        "hours": [h * 1000 for h in hours],  # JavaScript time
        "turns_per_hour": {s: [sum(1 for t in by_hour.get(h, []) if t.source == s) for h in hours] for s in sources},
        "latency_ms": latency,
        "brains": _count_by(answered, lambda t: t.backend),
        "reasons": _count_by(answered, lambda t: t.backend_reason),
        "answered": len(answered),
        "local_share": round(local / len(answered), 3) if answered else None,
        "turns": len(turns),
        "speculation": speculation_series(turns, hours, by_hour),
    }


def speculation_series(
    turns: list[TurnRecord], hours: list[float], by_hour: dict[float, list[TurnRecord]]
) -> dict[str, Any]:
    """Speculations adopted and wasted per hour, and the Gemini requests wasted on them: per hour and per turn
    (the issue's measure of cost: wasted requests over the turns that could speculate, the plush's spoken ones)."""
    spoken = [t for t in turns if t.source == "device"]

    def per_hour(field: str) -> list[int]:
        return [sum(getattr(t, field) for t in by_hour.get(h, [])) for h in hours]

    wasted_gemini = sum(t.speculation_gemini_wasted for t in spoken)
    return {
        "adopted": per_hour("speculations_adopted"),
        "wasted": per_hour("speculations_wasted"),
        "gemini_wasted": per_hour("speculation_gemini_wasted"),
        "started": sum(t.speculations for t in spoken),
        "adopted_total": sum(t.speculations_adopted for t in spoken),
        "gemini_wasted_total": wasted_gemini,
        "gemini_wasted_per_turn": round(wasted_gemini / len(spoken), 3) if spoken else None,
    }


def _count_by(turns: list[TurnRecord], key: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for turn in turns:
        counts[key(turn)] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
