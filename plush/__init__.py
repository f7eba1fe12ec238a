"""Plush: an open-source voice companion that lives inside a plush toy.

One distribution, one import package. At the bottom, what both sides share: configuration, errors, logging,
owners and pairing (`plush.config`, ...), the contract (`plush.protos`) and the speech layer
(`plush.voice_models`); on them the two sides, the plush (`plush.device`) and the server (`plush.server`), which
never import each other; at the top, the `plush` command line (`plush.cli`) that wires them together.
"""

__version__ = "0.1.0"
