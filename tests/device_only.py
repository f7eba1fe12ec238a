"""Run Python as if only `plush[device]` were installed: everything the other extras bring cannot be imported.

A plush (a Raspberry Pi in a toy) installs `plush[device]` and nothing else, so a command that imports, say,
tomlkit (the telegram extra) at import time breaks `plush --help` there. This venv has every extra, so the
check takes the distributions `plush[device]` really needs (its requirements, followed through the installed
metadata with their markers) and makes every file of every *other* installed distribution unimportable: an
import of one raises ModuleNotFoundError, as it would on the Pi. Blocking by file, not by module name, keeps the
namespace packages right (google.protobuf is the base install's, google.genai the server's).
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_distributions(root: str = "plush", extras: frozenset[str] = frozenset({"device"})) -> set[str]:
    """The installed distributions that `root[extras]` pulls in, itself included (canonical names)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    wanted = [(root, extras)]
    names: set[str] = set()
    while wanted:
        name, with_extras = wanted.pop()
        if (name, with_extras) in seen:
            continue
        seen.add((name, with_extras))
        names.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a marker-less optional dependency that is not installed here is not needed either
        for line in requirements:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({**default_environment(), "extra": extra}) for extra in {"", *with_extras}
            ):
                continue
            wanted.append((_canonical(requirement.name), frozenset(requirement.extras)))
    return names


def blocked_files() -> list[str]:
    """Every installed file of a distribution that `plush[device]` does not need (absolute paths)."""
    needed = needed_distributions()
    blocked: list[str] = []
    for dist in metadata.distributions():
        if _canonical(dist.metadata["Name"]) in needed:
            continue
        for file in dist.files or []:
            if file.suffix in (".py", ".so", ".pyd") or file.name == "__init__.py":
                blocked.append(str(Path(str(dist.locate_file(file))).resolve()))
    return blocked


BLOCKER = """
import importlib.abc, json, os, sys
_BLOCKED = frozenset(json.loads(open(os.environ["PLUSH_BLOCKED_FILES"]).read()))

class _DeviceOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.origin and os.path.realpath(spec.origin) in _BLOCKED:
                    raise ModuleNotFoundError(f"No module named {name!r} (not in plush[device])", name=name)
                return spec
        return None

sys.meta_path.insert(0, _DeviceOnly())
"""


def write_blocked_files(path: Path) -> Path:
    """The blocked files as JSON for the child's PLUSH_BLOCKED_FILES."""
    path.write_text(json.dumps(blocked_files()), encoding="utf-8")
    return path
