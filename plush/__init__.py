"""Plush: an open-source voice companion that lives inside a plush toy.

This package holds what both sides share (configuration, errors, logging) and the `plush` command line. The
device (`device`), the server (`server`), the speech layer (`voice_models`) and the contract (`protos`) are
sibling packages of the same distribution.
"""

__version__ = "0.1.0"
