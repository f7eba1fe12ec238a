"""The voice dataset pipeline on "owner recordings" made with the real joe voice: import (cut, transcribe, review),
prepare (the folder Piper's trainer reads, loudness normalised, with a report), and the prompt sets."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
import tomli_w
from typer.testing import CliRunner

from plush.config import data_home
from plush.voice_models.audio import FloatAudio, float_to_pcm16, pcm16_to_float, write_wav
from plush.voice_models.cloning import PIPER_RATE
from plush.voice_models.cloning.audio_checks import check_take
from plush.voice_models.cloning.dataset import DatasetError, PrepareOptions, prepare
from plush.voice_models.cloning.importing import (
    REVIEW_FILE,
    ClipImportError,
    ImportOptions,
    find_audio,
    import_audio,
    read_review,
    write_review,
)
from plush.voice_models.cloning.prompts import (
    ENGLISH_PHONEMES,
    FINALS,
    INITIALS,
    VOWELS,
    Prompt,
    builtin_prompts,
    jamo_counts,
    phoneme_counts,
)
from plush.voice_models.cloning.recording import RecordingSession
from plush.voice_models.speech_scoring import character_error_rate
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer
from plush.voice_models.vad import SileroVad

pytestmark = pytest.mark.real_weights

SENTENCES = [
    "The little bear found three shiny pebbles by the river.",
    "Would you like pancakes with honey for breakfast?",
    "The yellow umbrella is hanging behind the door.",
]
KOREAN = "오늘은 하늘이 정말 맑아요."


@pytest.fixture(scope="module")
def joe(real_joe_voice: Path) -> Synthesizer:
    return Synthesizer(real_joe_voice, length_scale=1.1)


@pytest.fixture(scope="module")
def joe_korean(real_joe_voice: Path, tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    """Joe reading Korean through espeak-ng's `ko` phonemes: what an owner's Korean sounds like to Whisper here."""
    folder = tmp_path_factory.mktemp("joe_ko")
    (folder / "joe-ko.onnx").symlink_to(real_joe_voice)
    config = json.loads(Path(f"{real_joe_voice}.json").read_text(encoding="utf-8"))
    config["espeak"]["voice"] = "ko"
    (folder / "joe-ko.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return Synthesizer(folder / "joe-ko.onnx")


@pytest.fixture(scope="module")
def whisper(real_whisper_base: Path) -> Transcriber:
    return Transcriber(real_whisper_base, options=SttOptions(encoder_window="fit", languages=("en", "ko")))


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def spoken(joe: Synthesizer) -> list[FloatAudio]:
    """Each of SENTENCES in joe's voice, at 22,050 Hz."""
    return [pcm16_to_float(joe.synthesize(text)) for text in SENTENCES]


def silence(seconds: float) -> FloatAudio:
    return np.zeros(int(seconds * PIPER_RATE), dtype=np.float32)


def encode(path: Path, audio: FloatAudio, codec: str, container_format: str, rate: int = 48000) -> Path:
    """Write audio the way phones and messengers do (Opus in OGG, FLAC ...) with PyAV."""
    import av
    import soxr

    samples = np.frombuffer(float_to_pcm16(soxr.resample(audio, PIPER_RATE, rate)), dtype="<i2")
    with av.open(str(path), "w", format=container_format) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def wav_format(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.getnchannels(), wav.getsampwidth()


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, spoken: list[FloatAudio], whisper: Transcriber, vad: SileroVad
) -> Path:
    """An import folder made from a voice message (two sentences with a pause, Opus in OGG) and a FLAC file."""
    sources = tmp_path_factory.mktemp("owner_audio")
    two = np.concatenate([silence(0.5), spoken[0], silence(1.2), spoken[1], silence(0.6)])
    encode(sources / "message.ogg", two, "libopus", "ogg")
    encode(sources / "umbrella.flac", np.concatenate([silence(0.3), spoken[2], silence(0.4)]), "flac", "flac")
    (sources / "notes.txt").write_text("not audio", encoding="utf-8")
    folder = tmp_path_factory.mktemp("import")
    result = import_audio(find_audio([sources]), folder, whisper, vad, options=ImportOptions(language="en"))
    assert result.files == 2 and not result.failed
    return folder


def test_import_cuts_recordings_at_pauses_and_transcribes_each_clip(imported: Path) -> None:
    rows = read_review(imported)

    assert len(rows) == 3, rows  # the voice message cut at its pause, the FLAC file whole
    by_source = sorted(rows, key=lambda row: (not row.source.endswith("message.ogg"), row.clip))
    for row, sentence in zip(by_source, SENTENCES, strict=True):
        assert row.keep
        assert character_error_rate(sentence, row.text) < 0.2, (sentence, row.text)
        assert wav_format(imported / row.clip) == (PIPER_RATE, 1, 2)
        assert 2.0 < row.seconds < 6.0
    assert json.loads((imported / "import.json").read_text())["language"] == "en"


def test_prepare_writes_the_piper_dataset_honouring_the_owners_review(imported: Path, tmp_path: Path) -> None:
    import pyloudnorm

    rows = read_review(imported)
    dropped, corrected = rows[0], rows[1]
    edited = [row.__class__(**{**row.__dict__, "keep": False}) if row is dropped else row for row in rows]
    edited[1] = corrected.__class__(**{**corrected.__dict__, "text": "Corrected | by the owner."})
    write_review(imported, edited)

    report = prepare([imported], tmp_path / "dataset", options=PrepareOptions(min_minutes=0.05, min_clips=2))

    lines = (tmp_path / "dataset" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    ids = [line.split("|")[0] for line in lines]
    assert Path(dropped.clip).stem not in ids
    assert f"{Path(corrected.clip).stem}|Corrected by the owner." in lines  # no stray column separator
    meter = pyloudnorm.Meter(PIPER_RATE)
    for clip_id in ids:
        wav = tmp_path / "dataset" / "wavs" / f"{clip_id}.wav"
        assert wav_format(wav) == (PIPER_RATE, 1, 2)
        with wave.open(str(wav), "rb") as handle:
            audio = pcm16_to_float(handle.readframes(handle.getnframes()))
        assert meter.integrated_loudness(audio.astype(np.float64)) == pytest.approx(-23.0, abs=1.0)
    on_disk = json.loads((tmp_path / "dataset" / "report.json").read_text(encoding="utf-8"))
    assert on_disk == report
    assert report["clips"] == 2 and report["language"] == "en" and report["sample_rate"] == PIPER_RATE
    assert report["minutes"] == pytest.approx(report["seconds"] / 60, abs=0.01)
    assert 2.0 < report["clip_seconds"]["min"] <= report["clip_seconds"]["median"] <= report["clip_seconds"]["max"]
    assert report["enough_to_train"] is True
    assert report["thresholds"] == {"min_minutes": 0.05, "min_clips": 2, "recommended_minutes": 30.0}
    assert [entry["id"] for entry in report["rejected"]] == [Path(dropped.clip).stem]
    assert "left out in the review file" in report["rejected"][0]["reasons"][0]


def test_import_again_adds_only_new_files_and_keeps_the_owners_edits(
    imported: Path, spoken: list[FloatAudio], tmp_path: Path, whisper: Transcriber, vad: SileroVad
) -> None:
    before = read_review(imported)
    write_review(imported, [before[0].__class__(**{**before[0].__dict__, "text": "My own words."}), *before[1:]])
    new = tmp_path / "new.wav"
    write_wav(new, float_to_pcm16(np.concatenate([silence(0.3), spoken[2], silence(0.3)])), PIPER_RATE)
    sources = [*(Path(row.source) for row in before), new]

    result = import_audio(find_audio(sources), imported, whisper, vad, options=ImportOptions(language="en"))

    after = read_review(imported)
    assert (result.files, result.already_imported) == (1, 2)
    assert after[0].text == "My own words."
    assert len(after) == len(before) + 1 and after[-1].source == str(new.resolve())


def test_prepare_lists_every_unusable_clip_with_its_reason_and_says_when_there_is_not_enough(
    tmp_path: Path, spoken: list[FloatAudio], vad: SileroVad
) -> None:
    prompts = [Prompt(f"en-{n:04d}", text) for n, text in enumerate([*SENTENCES, "Hi."], 1)]
    session = RecordingSession.open(tmp_path / "session", language="en", prompts=prompts, sample_rate=PIPER_RATE)
    takes = {
        "en-0001": spoken[0],
        "en-0002": np.clip(spoken[1] * 40, -1, 1),  # clipped
        "en-0003": spoken[2] * 0.0005,  # the microphone was nearly off
        "en-0004": spoken[0][: int(0.5 * PIPER_RATE)],  # too short
    }
    for prompt in prompts:
        audio = takes[prompt.id]
        check = check_take(audio, PIPER_RATE, vad)
        full = check.__class__(**{**check.__dict__, "trim": (0, len(audio))})
        session.keep(prompt, audio, full)

    report = prepare([tmp_path / "session"], tmp_path / "dataset")

    reasons = {entry["id"]: " ".join(entry["reasons"]) for entry in report["rejected"]}
    assert set(reasons) == {"en-0002", "en-0003", "en-0004"}
    assert "clipped" in reasons["en-0002"]
    assert "silent" in reasons["en-0003"]
    assert "too short" in reasons["en-0004"]
    assert report["clips"] == 1 and report["enough_to_train"] is False
    assert report["thresholds"]["min_minutes"] == 10.0 and report["thresholds"]["min_clips"] == 100
    assert "record more" in report["advice"]
    assert (tmp_path / "dataset" / "metadata.csv").read_text(encoding="utf-8") == f"en-0001|{SENTENCES[0]}\n"


def test_korean_import_keeps_the_owners_corrected_hangul_text(
    joe_korean: Synthesizer, whisper: Transcriber, vad: SileroVad, tmp_path: Path
) -> None:
    audio = np.concatenate([silence(0.4), pcm16_to_float(joe_korean.synthesize(KOREAN)), silence(0.4)])
    encode(tmp_path / "voice.ogg", audio, "libopus", "ogg")

    import_audio([tmp_path / "voice.ogg"], tmp_path / "import", whisper, vad, options=ImportOptions(language="ko"))
    row, *rest = read_review(tmp_path / "import")  # Whisper's draft of joe's Korean is poor: the owner fixes it
    write_review(
        tmp_path / "import",
        [row.__class__(**{**row.__dict__, "text": KOREAN, "keep": True})]
        + [extra.__class__(**{**extra.__dict__, "keep": False}) for extra in rest],
    )
    report = prepare([tmp_path / "import"], tmp_path / "dataset")

    assert report["language"] == "ko" and report["espeak_voice"] == "ko"
    metadata = (tmp_path / "dataset" / "metadata.csv").read_text(encoding="utf-8")
    assert metadata == f"{Path(row.clip).stem}|{KOREAN}\n"
    assert re.fullmatch(r"[가-힣 .]+", metadata.split("|")[1].strip())


def test_prepare_refuses_a_folder_of_other_files_and_mixed_languages(tmp_path: Path) -> None:
    keep = tmp_path / "photos"
    keep.mkdir()
    (keep / "holiday.jpg").write_bytes(b"precious")
    en = RecordingSession.open(tmp_path / "en", language="en", prompts=[Prompt("a", "Hi.")], sample_rate=PIPER_RATE)
    ko = RecordingSession.open(tmp_path / "ko", language="ko", prompts=[Prompt("b", "안녕.")], sample_rate=PIPER_RATE)

    with pytest.raises(DatasetError, match="not a Plush dataset"):
        prepare([en.folder], keep)
    with pytest.raises(DatasetError, match="different languages"):
        prepare([en.folder, ko.folder], tmp_path / "dataset")
    with pytest.raises(DatasetError, match="neither a recording session"):
        prepare([keep], tmp_path / "dataset")
    assert (keep / "holiday.jpg").read_bytes() == b"precious"


def test_a_review_file_with_a_bad_keep_value_names_the_line(tmp_path: Path) -> None:
    (tmp_path / REVIEW_FILE).write_text(
        "# comment\nkeep\tclip\tseconds\ttext\tsource\tnote\nyes\tclips/a.wav\t2.0\tHello.\tx\t\n"
        "maybe\tclips/b.wav\t2.0\tBye.\tx\t\n",
        encoding="utf-8",
    )
    with pytest.raises(ClipImportError, match="line 4: keep must be yes or no"):
        read_review(tmp_path)


def test_plush_voice_import_telegram_reads_the_voice_notes_the_bridge_kept(
    spoken: list[FloatAudio], real_whisper_base: Path, tmp_path: Path
) -> None:
    from plush.cli import app

    notes = data_home() / "telegram" / "voice_notes" / "123456"
    notes.mkdir(parents=True)
    encode(notes / "note-1.ogg", np.concatenate([silence(0.3), spoken[1], silence(0.3)]), "libopus", "ogg")
    config = tmp_path / "plush.toml"
    config.write_text(tomli_w.dumps({"stt": {"model": str(real_whisper_base)}}), encoding="utf-8")

    logging = structlog.get_config()  # the command sets logging up on CliRunner's stderr, closed afterwards
    try:
        result = CliRunner().invoke(
            app, ["voice", "import", "--telegram", "--out", str(tmp_path / "imp"), "-l", "en", "--config", str(config)]
        )
    finally:
        structlog.configure(**logging)

    assert result.exit_code == 0, result.output
    assert "imported 1 file(s): 1 clips, 1 kept" in result.output
    (row,) = read_review(tmp_path / "imp")
    assert row.source.endswith("123456/note-1.ogg")
    assert character_error_rate(SENTENCES[1], row.text) < 0.15


def test_prompt_sets_cover_every_english_phoneme_and_every_korean_jamo() -> None:
    english = [p.text for p in builtin_prompts("en")]
    korean = [p.text for p in builtin_prompts("ko")]

    phonemes = phoneme_counts(english, "en-us")
    assert {p: phonemes[p] for p in ENGLISH_PHONEMES if phonemes[p] < 15} == {}
    jamo = jamo_counts(korean)
    assert [i for i in INITIALS if jamo[f"i:{i}"] < 20] == []
    assert [v for v in VOWELS if jamo[f"v:{v}"] < 3] == []
    assert [f for f in FINALS if jamo[f"f:{f}"] < 1] == []  # even 외곬's ㄽ and 읊다's ㄿ


def test_prompt_sets_are_a_few_hundred_varied_sentences_with_numbers_in_words() -> None:
    for language in ("en", "ko"):
        prompts = builtin_prompts(language)
        texts = [p.text for p in prompts]
        assert 250 <= len(prompts) <= 500
        assert len({p.id for p in prompts}) == len(prompts) == len(set(texts))
        assert not [t for t in texts if re.search(r"\d", t)], "numbers are written as words"
        assert sum(t.endswith("?") for t in texts) >= 30
        assert sum(t.endswith("!") for t in texts) >= 15
        assert max(len(t) for t in texts) <= 80, "one breath each"
    assert prompts[0].id == "ko-0001"
