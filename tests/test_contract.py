"""The contract: committed stubs match the .proto, and the import layers of ARCHITECTURE.md hold."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from plush.protos import build


def test_generated_stubs_are_fresh() -> None:
    assert build.stale_files() == [], "run: python -m plush.protos.build"


def test_stubs_import_from_the_protos_package() -> None:
    from plush.protos.plush.v1 import companion_pb2 as pb

    event = pb.TurnEvent(turn_id="t", text_delta=pb.ReplyText(text="hi"))
    assert pb.TurnEvent.FromString(event.SerializeToString()).text_delta.text == "hi"


def test_device_and_server_never_import_each_other_nor_the_command_line() -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Contracts: 3 kept, 0 broken." in lint.stdout
    assert "nothing outside plush.cli imports the command line KEPT" in lint.stdout


def test_every_command_line_module_lives_in_plush_cli() -> None:
    """typer is the command line's: a module outside plush/cli/ that imports it is a command in the wrong place."""
    outside = [path for path in (REPO / "plush").rglob("*.py") if (REPO / "plush" / "cli") not in path.parents]
    with_typer = [
        str(path.relative_to(REPO))
        for path in outside
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "typer" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "typer")
    ]
    assert outside and with_typer == []


def test_installing_plush_adds_one_import_package_only(tmp_path: Path) -> None:
    """Plush must not shadow (or be shadowed by) another distribution's `server`, `device`, `protos`..."""
    probe = (
        "import importlib.util, json; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None "
        "for n in ('server', 'device', 'protos', 'voice_models', "
        "'plush.server', 'plush.device', 'plush.protos', 'plush.voice_models')}))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(found) == {
        "server": False,
        "device": False,
        "protos": False,
        "voice_models": False,
        "plush.server": True,
        "plush.device": True,
        "plush.protos": True,
        "plush.voice_models": True,
    }
