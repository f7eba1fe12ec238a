"""The tiny test-time models load and run in the real libraries (faster-whisper, piper, llama.cpp).

Every other test that uses them relies on these facts, so they are checked here on outcomes: deterministic
non-empty transcripts, audio whose length follows the phoneme count, and a chat stream with text in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import PIPER_SAMPLES_PER_ID, TinyModels, build_models, build_piper_voice, build_whisper

REAL_TOKENIZER = Path(__file__).parents[2] / "shared" / "models" / "whisper-tiny-tokenizer"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """One set of models (generated Whisper tokenizer) shared by this module's tests."""
    return build_models(tmp_path_factory.mktemp("tiny"), tokenizer_dir=None)


def _transcribe(model_dir: Path, language: str) -> tuple[str, str]:
    """Transcribe 2 s of faint noise twice with the settings the project uses for short utterances."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    audio = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.01
    texts = []
    for _ in range(2):
        segments, info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            max_new_tokens=8,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts.append("".join(segment.text for segment in segments))
        assert info.language == language
    assert texts[0] == texts[1]
    return texts[0], info.language


def test_build_models_returns_existing_files(tiny_set: TinyModels) -> None:
    assert {p.name for p in tiny_set.whisper_dir.iterdir()} >= {"model.bin", "config.json", "tokenizer.json"}
    assert tiny_set.piper_voice.suffix == ".onnx"
    assert tiny_set.piper_voice.with_name(tiny_set.piper_voice.name + ".json").is_file()
    assert tiny_set.gguf.stat().st_size > 0


@pytest.mark.parametrize("language", ["en", "ko"])
def test_whisper_with_generated_tokenizer_is_multilingual_and_deterministic(
    tiny_set: TinyModels, language: str
) -> None:
    text, detected = _transcribe(tiny_set.whisper_dir, language)
    assert text.strip()
    assert detected == language


def test_whisper_build_is_reproducible(tiny_set: TinyModels, tmp_path: Path) -> None:
    again = build_whisper(tmp_path / "again")
    assert (again / "model.bin").read_bytes() == (tiny_set.whisper_dir / "model.bin").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny_set.whisper_dir / "tokenizer.json").read_bytes()


@pytest.mark.skipif(not REAL_TOKENIZER.is_dir(), reason="shared whisper-tiny tokenizer files are not present")
def test_whisper_with_real_tokenizer(tmp_path: Path) -> None:
    model_dir = build_whisper(tmp_path / "whisper", tokenizer_dir=REAL_TOKENIZER)
    text, _ = _transcribe(model_dir, "ko")
    assert text.strip()


@pytest.mark.parametrize(
    ("espeak_voice", "text"),
    [("en-us", "Hello there. How are you?"), ("ko", "안녕하세요. 반가워요!")],
)
def test_piper_voice_yields_one_chunk_per_sentence(tmp_path: Path, espeak_voice: str, text: str) -> None:
    from piper import PiperVoice

    voice = PiperVoice.load(build_piper_voice(tmp_path, espeak_voice=espeak_voice, sample_rate=16000))
    chunks = list(voice.synthesize(text))
    assert len(chunks) == 2
    for chunk in chunks:
        assert chunk.sample_rate == 16000
        assert len(chunk.audio_float_array) == PIPER_SAMPLES_PER_ID * len(chunk.phoneme_ids)
        assert np.abs(chunk.audio_float_array).max() > 0
    again = list(voice.synthesize(text))
    assert [c.audio_float_array.tobytes() for c in again] == [c.audio_float_array.tobytes() for c in chunks]


def test_piper_voice_raw_audio_is_a_quiet_tone(tiny_set: TinyModels) -> None:
    from piper import PiperVoice

    voice = PiperVoice.load(tiny_set.piper_voice)
    audio = voice.phoneme_ids_to_audio([1, 2, 3])
    assert isinstance(audio, np.ndarray)
    assert audio.shape == (3 * PIPER_SAMPLES_PER_ID,)
    assert 0.05 < np.abs(audio).max() <= 0.1 + 1e-6


def _stream(model_path: Path) -> list[str]:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=512, seed=7, verbose=False)
    stream: Any = llm.create_chat_completion(
        messages=[{"role": "system", "content": "You are Plush."}, {"role": "user", "content": "hi"}],
        stream=True,
        max_tokens=16,
        temperature=0.0,
    )
    return [chunk["choices"][0]["delta"].get("content") or "" for chunk in stream]


def test_gguf_streams_printable_text_deterministically(tiny_set: TinyModels) -> None:
    deltas = _stream(tiny_set.gguf)
    text = "".join(deltas)
    assert sum(1 for d in deltas if d) >= 2
    assert text.strip()
    assert text.isprintable()
    assert _stream(tiny_set.gguf) == deltas
