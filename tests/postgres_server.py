"""A real PostgreSQL for the tests and benchmarks: Debian's server binaries (scripts/setup --test), a scratch cluster
on 127.0.0.1, removed when it stops. The code that starts it is `plush.scratch_engines`, which scripts/cluster
uses too."""

from __future__ import annotations

from plush.scratch_engines import ScratchPostgres as PostgresServer
from plush.scratch_engines import postgres_bin

__all__ = ["PostgresServer", "postgres_bin"]
