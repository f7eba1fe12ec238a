"""A turn's waterfall: each stage as a bar from its start to its end, and the milestones people ask about
(speech end, transcript final, first token, first audio chunk, first audio played, done).

Start times are known for turns since the server started (kept in memory with the live feed); the turn log
keeps durations only, so an older turn's bars are drawn from the turn's start and marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass

LABELS = {
    "stt": "speech to text (server)",
    "llm_first_token": "brain: first token",
    "llm": "brain: whole reply",
    "tts": "speech synthesis",
    "first_audio": "first audio chunk sent",
    "first_audio_played": "first audio played (the plush's speaker)",
    "total": "whole turn",
}
ORDER = ("stt", "llm_first_token", "llm", "tts", "first_audio", "first_audio_played", "total")
PLAYED = "first_audio_played"
"""Reported by the plush after its speaker started, often after the turn was stored: kept in the stored
timings only, as ms from the turn's start."""


@dataclass(frozen=True)
class Bar:
    stage: str
    label: str
    start_ms: float
    duration_ms: float
    left_pct: float
    width_pct: float


@dataclass(frozen=True)
class Waterfall:
    bars: list[Bar]
    milestones: list[tuple[str, float | None]]
    """(name, ms from the turn's start); None: not measured for this turn."""
    exact: bool
    """Start times known (else each bar starts at 0)."""
    total_ms: float


def waterfall(timings: dict[str, float], stages: dict[str, tuple[float, float]]) -> Waterfall:
    exact = bool(stages)
    spans = {k: (float(v[0]), float(v[1])) for k, v in stages.items()} if exact else {}
    if not exact:
        spans = {stage: (0.0, float(ms)) for stage, ms in timings.items()}
    if PLAYED in timings and PLAYED not in spans:
        spans[PLAYED] = (0.0, float(timings[PLAYED]))
    total = max([start + length for start, length in spans.values()] or [0.0]) or 1.0
    names = [s for s in ORDER if s in spans] + sorted(s for s in spans if s not in ORDER)
    bars = [
        Bar(
            stage=name,
            label=LABELS.get(name, name),
            start_ms=round(spans[name][0], 1),
            duration_ms=round(spans[name][1], 1),
            left_pct=round(100 * spans[name][0] / total, 2),
            width_pct=max(0.5, round(100 * spans[name][1] / total, 2)),
        )
        for name in names
    ]

    def end(stage: str) -> float | None:
        return round(sum(spans[stage]), 1) if stage in spans and exact else None

    milestones: list[tuple[str, float | None]] = [
        ("speech end", round(spans["stt"][0], 1) if "stt" in spans and exact else None),
        ("transcript final", end("stt")),
        ("first token", end("llm_first_token")),
        ("first audio chunk", round(spans["first_audio"][1], 1) if "first_audio" in spans else None),
        ("first audio played", round(spans[PLAYED][1], 1) if PLAYED in spans else None),
        ("done", round(spans["total"][1], 1) if "total" in spans else None),
    ]
    return Waterfall(bars, milestones, exact, round(total, 1))
