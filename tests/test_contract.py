"""The contract: committed stubs match the .proto, and the import layers of ARCHITECTURE.md hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

from protos import build


def test_generated_stubs_are_fresh() -> None:
    assert build.stale_files() == [], "run: python -m protos.build"


def test_stubs_import_from_the_protos_package() -> None:
    from protos.plush.v1 import companion_pb2 as pb

    event = pb.TurnEvent(turn_id="t", text_delta=pb.ReplyText(text="hi"))
    assert pb.TurnEvent.FromString(event.SerializeToString()).text_delta.text == "hi"


def test_device_and_server_never_import_each_other() -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Contracts: 2 kept, 0 broken." in lint.stdout
