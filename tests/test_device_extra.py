"""`plush[device]` alone runs every command a plush uses: checked by making the other extras unimportable.

A Raspberry Pi installs `plush[device]` only (hardware/pi/install.sh); this venv has every extra, so each check
runs a child Python in which every file of a distribution outside `plush[device]` fails to import
(tests/device_only.py), as it would on the Pi. hardware/pi/test-arm64.sh proves the same on a real arm64 install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from device_only import BLOCKER, write_blocked_files

from plush.cli.models import default_side, models_for
from plush.config import load_config
from plush.extras import extra_for
from plush.voice_models.model_catalog import AUTO

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def device_only_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    blocked = write_blocked_files(tmp_path_factory.mktemp("device-only") / "blocked.json")
    return {**os.environ, "PLUSH_BLOCKED_FILES": str(blocked), "PYTHONPATH": str(ROOT)}


def _run(code: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _plush(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(f"import sys\nsys.argv = ['plush', *{list(args)!r}]\nfrom plush.cli import main\nmain()", env, cwd)


def test_the_blocker_really_hides_the_other_extras(device_only_env: dict[str, str]) -> None:
    result = _run("import tomlkit", device_only_env)
    assert result.returncode != 0
    assert "not in plush[device]" in result.stderr


def test_every_command_shows_its_help_with_only_the_device_extra(device_only_env: dict[str, str]) -> None:
    code = """
import typer.main
from click.testing import CliRunner
from plush.cli import app

root = typer.main.get_command(app)
def paths(command, prefix):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, [*prefix, name])
runner = CliRunner()
count = 0
for path in paths(root, []):
    result = runner.invoke(root, [*path, "--help"])
    count += 1
    if result.exit_code != 0 or result.exception is not None:
        raise SystemExit(f"plush {' '.join(path)} --help: {result.exit_code} {result.exception!r} {result.output}")
print("helped", count)
"""
    result = _run(code, device_only_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) > 30  # every subcommand, the device ones and the server's too


def test_every_module_a_plush_runs_imports_with_only_the_device_extra(device_only_env: dict[str, str]) -> None:
    code = """
import importlib, pkgutil
import plush.device
names = [m.name for m in pkgutil.walk_packages(plush.device.__path__, "plush.device.")]
names += ["plush.cli.chat", "plush.cli.pair", "plush.cli.models", "plush.voice_models.stt",
          "plush.voice_models.streaming_stt", "plush.voice_models.vad", "plush.voice_models.opus",
          "plush.voice_models.model_store"]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    result = _run(code, device_only_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) > 10


def test_a_command_of_another_extra_names_the_extra_to_install(device_only_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "plush.toml"
    config.write_text("", encoding="utf-8")
    result = _plush(device_only_env, "telegram", "allow", "42", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'pip install "plush[telegram]"' in result.stderr
    assert "Traceback" not in result.stderr
    assert config.read_text(encoding="utf-8") == ""


def test_the_server_on_a_plush_names_the_server_extra(device_only_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "plush.toml"
    config.write_text("", encoding="utf-8")
    result = _plush(device_only_env, "server", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'pip install "plush[server]"' in result.stderr
    assert "Traceback" not in result.stderr


def _modules_of(distribution: str) -> set[str]:
    """The importable names a distribution installs: top-level ones, and `ns.name` inside a namespace package."""
    names = set()
    for file in metadata.files(distribution) or []:
        parts = file.parts
        if ".dist-info" in parts[0] or parts[0].startswith(("..", "__")):
            continue
        if len(parts) == 1:
            if file.suffix == ".py":
                names.add(file.stem)  # a one-file module (sounddevice.py)
            continue
        namespace = not (Path(str(metadata.distribution(distribution).locate_file(parts[0]))) / "__init__.py").exists()
        names.add(f"{parts[0]}.{parts[1]}" if namespace and len(parts) > 2 else parts[0])
    return names


def test_the_extras_table_agrees_with_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    user_facing = ("device", "server", "llama", "telegram", "dashboard", "voice", "train")
    for extra in user_facing:
        for line in extras[extra]:
            distribution = line.split("[")[0].split("=")[0].split(">")[0].strip()
            if distribution == "plush":
                continue
            givers = {name for name in user_facing if any(r.startswith(distribution) for r in extras[name])}
            modules = _modules_of(distribution)
            assert any(extra_for(m) in givers for m in modules), (extra, distribution, sorted(modules))


def test_a_plush_only_install_downloads_the_plush_models_by_default(device_only_env: dict[str, str]) -> None:
    result = _run("from plush.cli.models import default_side\nprint(default_side())", device_only_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "device"
    assert default_side() == "all"  # this venv has the server's side


def test_models_for_each_side_follow_the_config() -> None:
    cfg = load_config(None, stt={"model": "whisper-base"}, server={"stt_model": "whisper-small"})
    assert models_for(cfg, "device") == ["whisper-base"]
    assert models_for(cfg, "server") == ["whisper-small", cfg.tts.voice, AUTO]
    assert models_for(cfg, "all") == ["whisper-base", "whisper-small", cfg.tts.voice, AUTO]
    pi4 = load_config(None, device={"stt": "server"})
    assert models_for(pi4, "device") == []  # a Pi 4 lets the server transcribe: nothing to fetch
