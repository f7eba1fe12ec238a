"""The soak: turns from a few plushes for a long time (default 30 minutes, 4 plushes, server-side STT on), and
the server's memory at the start and the end. A leak shows as memory that keeps growing once the server is warm;
the first three minutes (models touched for the first time, caches and allocator arenas filling) are the
warm-up, so "start" is the server's memory three minutes in, and the growth rate is fitted over the second
half of the run.

It is bench/load.py with one level (see there for what each plush does):

    nohup .venv/bin/python bench/soak.py > bench/results/soak.out 2>&1 &     # 30 minutes
    .venv/bin/python bench/soak.py --minutes 0.2 --models tiny               # a smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from harness import fmt_ms, markdown_table, plot_setup, save_plot

WARM_UP_S = 180.0


def memory_points(data: dict[str, Any]) -> tuple[list[float], list[float]]:
    samples = data["levels"][0]["samples"]
    return [s["t"] for s in samples], [s["server_rss_mb"] for s in samples]


def soak_report(data: dict[str, Any]) -> str:
    level = data["levels"][0]
    times, rss = memory_points(data)
    if not times:
        return "no samples"
    warm = next((i for i, t in enumerate(times) if t >= min(WARM_UP_S, times[-1] / 4)), 0)
    first = [r for t, r in zip(times, rss, strict=True) if times[warm] <= t < times[warm] + 300]
    last = [r for t, r in zip(times, rss, strict=True) if t >= times[-1] - 300]
    half = len(times) // 2
    slope = float(np.polyfit(times[half:], rss[half:], 1)[0]) * 3600 if len(times) - half >= 2 else float("nan")
    rows = [[
        level["plushes"], "on" if level["stt_on_server"] else "off", f"{level['seconds'] / 60:.1f} min",
        level["answered"], level["refused"], level["errors"], level.get("not_stored", "?"),
        fmt_ms(level["first_audio_median"]),
        fmt_ms(level["first_audio_p99"]), f"{rss[warm]:.0f} MB (at {times[warm]:.0f} s)", f"{rss[-1]:.0f} MB",
        f"{max(rss):.0f} MB", f"{np.median(first):.0f} -> {np.median(last):.0f} MB", f"{slope:+.1f} MB/h",
    ]]  # fmt: skip
    header = ["plushes", "STT on server", "length", "turns", "refused", "errors", "not stored", "first audio median",
              "p99", "server memory at start", "at end", "max", "median, first 5 min after warm-up -> last 5 min",
              "growth (2nd half, fitted)"]  # fmt: skip
    return markdown_table(header, rows)


def plot_memory(data: dict[str, Any], path: Path) -> None:
    plt = plot_setup()
    times, rss = memory_points(data)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([t / 60 for t in times], rss, color="C0")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--plushes", type=int, default=4, help="plushes talking (default 4)")
    parser.add_argument("--stt", choices=("on", "off"), default="on", help="server-side STT (default on)")
    parser.add_argument("--models", choices=("real", "tiny"), default="real")
    parser.add_argument("--out", type=Path, help="folder for the results (default bench/results)")
    args = parser.parse_args()
    argv = ["--soak-minutes", str(args.minutes), "--plushes", str(args.plushes), "--stt", args.stt,
            "--models", args.models, *(["--out", str(args.out)] if args.out else [])]  # fmt: skip
    import load

    sys.argv = [str(Path(load.__file__)), *argv]
    load.main()


if __name__ == "__main__":
    main()
