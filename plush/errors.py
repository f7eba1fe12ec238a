"""Typed errors with messages a user can act on.

Every error Plush raises on purpose derives from `PlushError`; the CLI prints its message without a traceback,
so each message says what went wrong and what to do about it.
"""

from __future__ import annotations


class PlushError(Exception):
    """Base of all deliberate Plush errors; `str(err)` is shown to the user as is."""


class ConfigError(PlushError):
    """The configuration file or an environment override is invalid."""


class ModelMissingError(PlushError):
    """A model file is not on disk; the message names the command that fetches it."""


class AudioFormatError(PlushError):
    """Audio that cannot be used: wrong sample rate, channels, encoding, too long or empty."""
