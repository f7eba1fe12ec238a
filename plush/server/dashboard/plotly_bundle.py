"""Plotly's script as the installed `plotly` package ships it (no CDN, no copy in this repository), and what the
charts page needs so the bundle lives within the dashboard's Content-Security-Policy (see headers.py).

As it loads, the bundle writes MapLibre's CSS (for map traces, which the dashboard never draws) into a new
`<style>` element, unless an element with that style's id already exists. The policy refuses such inline text,
so the charts page places an empty element with each of those ids first; the ids are read from the bundle
itself, so a new Plotly release brings its own.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

_STYLE_GUARD = re.compile(r'getElementById\("([0-9a-f]{64})"\)\)\{var [\w$]+=document\.createElement\("style"\)')


def plotly_script() -> Path:
    """plotly.min.js as the installed `plotly` package ships it."""
    return Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))


@functools.cache
def inline_style_ids() -> tuple[str, ...]:
    """The ids of the `<style>` elements the bundle fills with CSS text unless they already exist."""
    text = plotly_script().read_text(encoding="utf-8")
    return tuple(dict.fromkeys(_STYLE_GUARD.findall(text)))
