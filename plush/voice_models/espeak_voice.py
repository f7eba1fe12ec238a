"""The built-in fallback voice for a language no trained voice speaks: espeak-ng, Debian's formant synthesizer.

Why it exists: the first owners speak Korean, and no Korean Piper voice (nor Korean speech to train one) can be
had from the package registries. An English voice reading Hangul is heard as English nonsense (joe's round-trip
character error rate on Korean: 2.4-2.8); espeak-ng's own Korean is robotic but heard as Korean. So until the
owner brings a Korean Piper voice (`[tts] voices = { ko = "/path/ko.onnx" }`) or trains their own, Hangul goes
to espeak-ng `ko`, and everything that lists voices labels it as the fallback it is.

espeak-ng runs as a process per piece (its library is not thread-safe, and a piece is a sentence: a few
milliseconds of start-up beside the synthesis). Text goes in on stdin, never as an argument.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

from plush.voice_models.tts import TtsError

ESPEAK_RATE = 22050
"""The rate espeak-ng's voices speak at."""
BUILTIN = "espeak-ng"
"""What `[tts] voices` names this voice by (`{ ko = "espeak-ng" }`)."""


class EspeakVoice:
    """espeak-ng speaking one language (`ko`, `en-us`...); the same `synthesize` as a Piper voice."""

    def __init__(self, language: str = "ko", *, executable: str | None = None) -> None:
        found = executable or shutil.which("espeak-ng")
        if found is None:
            raise TtsError(
                f"the built-in {language} voice needs espeak-ng: sudo apt-get install espeak-ng (or set a Piper "
                f'voice for it: [tts] voices = {{ {language} = "/path/voice.onnx" }})'
            )
        self.executable = found
        self.language = language
        self.sample_rate = ESPEAK_RATE
        self.label = f"espeak-ng {language} (built-in fallback)"

    def synthesize(self, text: str) -> bytes:
        """Speak `text`; mono s16le PCM at `sample_rate` (empty for text with nothing to say)."""
        if not text.strip():
            return b""
        try:
            done = subprocess.run(
                [self.executable, "-v", self.language, "--stdout"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TtsError(f"espeak-ng failed for {text[:40]!r}: {exc}") from exc
        if done.returncode != 0:
            raise TtsError(f"espeak-ng failed for {text[:40]!r}: {done.stderr.decode(errors='replace').strip()}")
        return _wav_samples(done.stdout)


def _wav_samples(wav: bytes) -> bytes:
    """The samples of the WAV espeak-ng writes to a pipe (its sizes say "unknown", so the data runs to the end)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise TtsError("espeak-ng wrote something that is not a WAV file")
    offset = 12
    while offset + 8 <= len(wav):
        kind, size = struct.unpack("<4sI", wav[offset : offset + 8])
        if kind == b"data":
            data = wav[offset + 8 :]
            return data[: len(data) - len(data) % 2]
        offset += 8 + size
    raise TtsError("espeak-ng's WAV has no audio in it")
