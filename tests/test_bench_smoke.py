"""The end-to-end benchmarks (bench/latency.py, barge_in.py, load.py, soak.py, cluster.py) run on tiny models.

They are scripts run by hand for minutes at a time; these smoke runs keep them from rotting. Each is a whole
run as a user starts it (`--quick`: tiny models, a turn or two): a real `plush server` process, the fake Gemini
process, and for latency and barge-in the headless PulseAudio and the simulated paw board on a pseudo-terminal.
The four start together (most of their time is real-time audio and waiting), and each test checks one of them:
its exit status, its report (every variant measured, no errors) and its raw numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_pulse

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "latency": ["latency.py", "--quick"],
    "barge_in": ["barge_in.py", "--quick"],
    "load": ["load.py", "--quick"],
    "soak": ["soak.py", "--models", "tiny", "--minutes", "0.1", "--plushes", "2", "--stt", "off"],
}


@dataclass
class Run:
    returncode: int
    output: str
    out: Path

    def report(self, name: str) -> str:
        assert self.returncode == 0, self.output[-4000:]
        return (self.out / f"{name}.md").read_text()

    def data(self, name: str) -> dict[str, Any]:
        assert self.returncode == 0, self.output[-4000:]
        data: dict[str, Any] = json.loads((self.out / f"{name}.json").read_text())
        return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """All four smoke runs, started at once, each writing into its own folder."""
    require_pulse()
    build = subprocess.run(["make", "-C", str(REPO / "hardware" / "firmware"), "sim"], capture_output=True, check=False)
    assert build.returncode == 0, build.stderr  # built once here, not by two runs at the same time
    procs = {}
    for name, (script, *args) in RUNS.items():
        out = tmp_path_factory.mktemp(name)
        command = [sys.executable, str(REPO / "bench" / script), *args, "--out", str(out)]
        procs[name] = (out, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = {}
    for name, (out, proc) in procs.items():
        try:
            output, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        results[name] = Run(proc.returncode, output, out)
    yield results


def test_latency_measures_every_variant_from_release_to_audio_played(runs: dict[str, Run]) -> None:
    report = runs["latency"].report("latency")
    turns = runs["latency"].data("latency")["turns"]
    assert {t["variant"] for t in turns} == {"gemini/fit/pcm", "gemini/fit/opus", "gemini/fit/naive"}
    for turn in turns:
        assert not turn["errors"], turn
        assert 0 < turn["end_to_end"] < 30_000
        assert 20 <= turn["button"] < 1000  # the paw board debounces for 25 ms
    plush = [t for t in turns if not t["variant"].endswith("naive")]
    assert all(t["server_first_audio"] > 0 and t["stt_tail"] >= 0 for t in plush)
    assert "| gemini/fit/pcm | 1 |" in report and "naive / this" in report
    assert (runs["latency"].out / "latency.png").stat().st_size > 1000


def test_barge_in_silences_the_speaker_within_the_hold(runs: dict[str, Run]) -> None:
    report = runs["barge_in"].report("barge_in")
    [record] = runs["barge_in"].data("barge_in")["barge_ins"]
    assert record["variant"] == "pcm"
    assert 0 <= record["silence"] < 1000
    assert record["listening_again"] > 0  # the press started a new turn
    assert "press -> silence median" in report


def test_load_answers_every_turn_of_several_plushes_with_server_side_stt(runs: dict[str, Run]) -> None:
    report = runs["load"].report("load")
    levels = runs["load"].data("load")["levels"]
    assert [(level["plushes"], level["stt_on_server"]) for level in levels] == [(1, True), (2, True)]
    for level in levels:
        assert level["answered"] >= level["plushes"]
        assert level["errors"] == 0, level["error_details"]
        assert level["not_stored"] == 0, "every answered turn is in the server's turn log"
        assert level["first_audio_median"] > 0 and level["stt_median"] > 0
        assert level["server_rss_mb_max"] > 50  # the server process was sampled, not this one
    assert "first audio median" in report
    assert (runs["load"].out / "load.png").stat().st_size > 1000


def test_soak_reports_server_memory_at_start_and_end(runs: dict[str, Run]) -> None:
    report = runs["soak"].report("soak")
    [level] = runs["soak"].data("soak")["levels"]
    assert level["plushes"] == 2 and level["stt_on_server"] is False
    assert level["errors"] == 0 and level["answered"] >= 2 and level["not_stored"] == 0
    assert len(level["samples"]) >= 4
    assert "server memory at start" in report and "MB/h" in report
    assert (runs["soak"].out / "soak.png").stat().st_size > 1000


def test_a_refusal_for_load_reaches_the_client_as_resource_exhausted() -> None:
    """bench/load.py counts a turn the server refused for load apart from errors by the status it carries."""
    import grpc

    from plush.device.client import describe_rpc_error

    busy = grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(), "busy")
    error = describe_rpc_error(busy, "127.0.0.1:1")
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RESOURCE_EXHAUSTED" in str(error) and "busy" in str(error)


def test_local_brains_bench_measures_each_brain_in_each_language(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "bench" / "local_brains.py"), "--quick", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "local_brains_quick.json").read_text())["results"]
    assert [r["name"] for r in rows] == ["tiny (en)", "tiny (ko)"]
    assert all(r["ttft_s"] and r["rss_start_mb"] > 0 and r["replies"] for r in rows)


def test_brain_quality_bench_runs_every_prompt_through_a_real_server(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "bench" / "brain_quality.py"), "--quick", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "brain_quality_quick.json").read_text())["results"]
    assert [r["brain"] for r in results] == ["tiny", "gemini (fake)"]
    for result in results:
        risky = [a for a in result["answers"] if a["kind"] != "everyday"]
        assert risky and all(a["outcome"] == "blocked" for a in risky), result["brain"]
        assert {a["language"] for a in result["answers"]} == {"en", "ko"}
    assert "risky handled" in (tmp_path / "brain_quality_quick.md").read_text()


def test_cluster_bench_kills_a_replica_restarts_postgresql_and_keeps_within_the_gemini_budget(
    tmp_path: Path,
) -> None:
    """bench/cluster.py --quick: PostgreSQL, Redis, nginx and real replicas; both phases measured, both faults
    made, every turn the plushes heard stored, Gemini within the budget the replicas share."""
    command = [sys.executable, str(REPO / "bench" / "cluster.py"), "--quick", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    single, cluster = json.loads((tmp_path / "cluster.json").read_text())["phases"]
    assert (single["replicas"], cluster["replicas"]) == (1, 3)
    assert single["answered"] > 0 and cluster["answered"] > 0
    made = {what for _, what in cluster["events"]}
    assert made == {
        "replica 0 SIGKILLed", "replica 0 starting again", "replica 0 listening again",
        "PostgreSQL restart begins", "PostgreSQL accepting connections again",
    }  # fmt: skip
    for phase in (single, cluster):
        assert phase["lost_answered"] == 0, "a turn the plush heard is in the turn log"
        assert phase["gemini_busiest_minute"] <= phase["gemini_budget_rpm"]
    assert (tmp_path / "cluster-logs" / "cluster" / "replica-0.log").exists()
    assert "Gemini busiest 60 s / budget" in (tmp_path / "cluster.md").read_text()
