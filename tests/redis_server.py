"""A real Redis for the tests and benchmarks: Debian's redis-server (scripts/setup --test) on 127.0.0.1, nothing
kept on disk. The code that starts it is `plush.scratch_engines`, which scripts/cluster uses too."""

from __future__ import annotations

from plush.scratch_engines import ScratchRedis as RedisServer

__all__ = ["RedisServer"]
