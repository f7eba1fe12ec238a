"""Speech to text on the real Whisper base: questions spoken by the real Piper voice joe are heard right.

What a user gets with the shipped `[stt]` settings: the words, the language (detected among the owner's
languages), and the short encoder window giving the same words as Whisper's full 30 s window.
"""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from plush.config import SttConfig
from plush.voice_models.audio import WHISPER_RATE, pcm16_to_float, resample_pcm16
from plush.voice_models.model_store import ModelStore
from plush.voice_models.speech_scoring import normalise
from plush.voice_models.stt import Transcriber
from plush.voice_models.tts import Synthesizer

pytestmark = pytest.mark.real_weights

QUESTIONS = (
    "What is the capital of France?",  # looped to max_new_tokens with a 1 s window
    "Can you tell me a story about a dragon?",
    "How many legs does a spider have?",
    "Why do I have to go to bed when it is still light outside?",
    "What would happen if the sun went away forever?",
    "Can we play a game now?",
)


@pytest.fixture(scope="module")
def spoken(real_joe_voice: Path) -> list[np.ndarray]:
    """Each question in joe's voice at 16 kHz, with the 0.16 s of silence the VAD keeps around speech."""
    voice = Synthesizer(real_joe_voice)
    pad = np.zeros(int(0.16 * WHISPER_RATE), dtype=np.float32)
    clips = []
    for question in QUESTIONS:
        pcm = resample_pcm16(voice.synthesize(question), voice.sample_rate, WHISPER_RATE)
        clips.append(np.concatenate([pad, pcm16_to_float(pcm), pad]))
    return clips


def transcriber(model: Path, tmp_path: Path, **stt: object) -> Transcriber:
    """Whisper base with the shipped [stt] settings (and `stt` changed)."""
    return Transcriber.from_config(SttConfig(model=str(model)).model_copy(update=stt), ModelStore(tmp_path))


def test_the_default_settings_hear_joes_questions_in_english(
    real_whisper_base: Path, spoken: list[np.ndarray], tmp_path: Path
) -> None:
    heard = [transcriber(real_whisper_base, tmp_path).transcribe(clip) for clip in spoken]
    wer = jiwer.wer([normalise(q) for q in QUESTIONS], [normalise(r.text) for r in heard])
    assert wer <= 0.05, [r.text for r in heard]
    assert [r.language for r in heard] == ["en"] * len(QUESTIONS)


def test_the_fit_window_hears_as_well_as_the_full_window(
    real_whisper_base: Path, spoken: list[np.ndarray], tmp_path: Path
) -> None:
    """Not word for word: on one clip either window may slip ("capital of friends" came from the full one), so
    the windows are compared by their error rates on the same clips, within about one word of each other."""
    fit = transcriber(real_whisper_base, tmp_path, encoder_window="fit")
    full = transcriber(real_whisper_base, tmp_path, encoder_window="full")
    short = [fit.transcribe(clip) for clip in spoken]
    padded = [full.transcribe(clip) for clip in spoken]
    said = [normalise(q) for q in QUESTIONS]
    fit_wer = jiwer.wer(said, [normalise(r.text) for r in short])
    full_wer = jiwer.wer(said, [normalise(r.text) for r in padded])
    assert fit_wer <= full_wer + 0.05, ([r.text for r in short], [r.text for r in padded])
    assert [r.language for r in short] == [r.language for r in padded] == ["en"] * len(QUESTIONS)
