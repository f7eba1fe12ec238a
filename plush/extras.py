"""Which extra of `plush` brings which importable package, so a missing one is a message that says what to install.

A plush installs `plush[device]` only; a server adds `server`, `llama`, `telegram`, `dashboard`. The command line
imports a side's packages only inside the subcommand that needs them, so every command starts on a plush, and
a subcommand that reaches for a package its machine lacks ends in one line naming the extra
(`pip install "plush[telegram]"`) instead of a traceback. The table follows pyproject.toml's
`[project.optional-dependencies]`; a test checks that the two agree.
"""

from __future__ import annotations

from plush.errors import PlushError

EXTRA_OF: dict[str, str] = {
    # device: the plush itself
    "faster_whisper": "device",
    "ctranslate2": "device",
    "onnxruntime": "device",
    "av": "device",
    "tokenizers": "device",
    "sounddevice": "device",
    "serial": "device",
    "gpiozero": "device",
    # server: the companion's brain, voice and store
    "grpc_health": "server",
    "grpc_reflection": "server",
    "google.genai": "server",
    "piper": "server",
    "aiosqlite": "server",
    "limits": "server",
    "cryptography": "server",
    "llama_cpp": "llama",
    "telegram": "telegram",
    "tomlkit": "telegram",
    "fastapi": "dashboard",
    "uvicorn": "dashboard",
    "jinja2": "dashboard",
    "multipart": "dashboard",
    "python_multipart": "dashboard",
    "argon2": "dashboard",
    "prometheus_client": "dashboard",
    "plotly": "dashboard",
    "redis": "redis",
    "asyncpg": "postgres",
    "pyloudnorm": "voice",
    "jiwer": "voice",
    "torch": "train",
    "lightning": "train",
    "monotonic_alignment_search": "train",
    "onnx": "train",
    "resemblyzer": "train",
}


class MissingExtraError(PlushError):
    """A command needs a package from an extra this machine did not install."""


def extra_for(module: str | None) -> str | None:
    """The extra that provides `module` (a dotted name; its longest known prefix wins), or None."""
    parts = (module or "").split(".")
    for end in range(len(parts), 0, -1):
        extra = EXTRA_OF.get(".".join(parts[:end]))
        if extra is not None:
            return extra
    return None


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The readable error for an import that failed because an extra is not installed (None: some other cause)."""
    extra = extra_for(exc.name)
    if extra is None:
        return None
    return MissingExtraError(
        f'this command needs plush[{extra}] (no module named {exc.name!r} here): pip install "plush[{extra}]" '
        f"(in a checkout: .venv/bin/pip install -e '.[{extra}]')"
    )
