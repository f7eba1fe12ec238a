"""The sentences the owner reads aloud in `plush voice record`: our own sets for Korean and English, or a file.

The built-in sets (`en.txt`, `ko.txt` beside this module) were written for Plush: short, child-friendly
sentences that a parent or a child can read in one breath, mixing statements, questions and exclamations, with
numbers written as words (a voice learns how "twenty-three" sounds, not how "23" is read). They are phonetically
varied on purpose: every English phoneme and every Korean jamo (initial, vowel and final) comes up many times,
which is what a voice needs to say words the owner never recorded. `jamo_counts` and `phoneme_counts` measure it.

A prompt file is plain UTF-8: one sentence a line; empty lines and lines starting with `#` are ignored. A prompt's
id is the language (or the file's name) and its position (`en-0007`); a recording session keeps its own copy of
the prompts, so editing a set later never shifts the ids of takes already recorded.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from plush.errors import PlushError

BUILTIN_LANGUAGES = ("en", "ko")
"""Languages with a built-in prompt set."""
ESPEAK_VOICES = {"en": "en-us", "ko": "ko"}
"""The espeak-ng voice Piper phonemizes each built-in language with."""


class PromptError(PlushError):
    """A prompt set cannot be read, or has no sentences."""


@dataclass(frozen=True)
class Prompt:
    """One sentence to read aloud, with the id its take is stored under."""

    id: str
    text: str


def builtin_prompts(language: str) -> list[Prompt]:
    """The built-in set for `language` ("en" or "ko")."""
    if language not in BUILTIN_LANGUAGES:
        raise PromptError(
            f"there is no built-in prompt set for '{language}' (there are: {', '.join(BUILTIN_LANGUAGES)}); "
            "write one sentence a line in a text file and pass it with --prompts FILE"
        )
    text = resources.files(__name__).joinpath(f"{language}.txt").read_text(encoding="utf-8")
    return parse_prompts(text, prefix=language)


def file_prompts(path: Path) -> list[Prompt]:
    """The prompts in the owner's own file (one sentence a line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"cannot read the prompt file {path}: {exc}") from exc
    prompts = parse_prompts(text, prefix=re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem) or "prompt")
    if not prompts:
        raise PromptError(f"the prompt file {path} has no sentences (one a line; # starts a comment)")
    return prompts


def parse_prompts(text: str, *, prefix: str) -> list[Prompt]:
    """One prompt per non-empty, non-comment line, ids `<prefix>-0001` onwards; repeated sentences once."""
    seen: set[str] = set()
    prompts: list[Prompt] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#") or line in seen:
            continue
        seen.add(line)
        prompts.append(Prompt(id=f"{prefix}-{len(prompts) + 1:04d}", text=line))
    return prompts


_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
VOWELS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
FINALS = "ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ"


def jamo_counts(texts: list[str]) -> Counter[str]:
    """How often each jamo occurs, keyed `i:ㄱ` (initial), `v:ㅏ` (vowel) and `f:ㄱ` (final)."""
    counts: Counter[str] = Counter()
    for text in texts:
        for char in text:
            code = ord(char)
            if not _HANGUL_FIRST <= code <= _HANGUL_LAST:
                continue
            index = code - _HANGUL_FIRST
            initial, rest = divmod(index, 21 * 28)
            vowel, final = divmod(rest, 28)
            counts[f"i:{INITIALS[initial]}"] += 1
            counts[f"v:{VOWELS[vowel]}"] += 1
            if final:
                counts[f"f:{FINALS[final - 1]}"] += 1
    return counts


ENGLISH_PHONEMES = (
    # consonants, as espeak-ng en-us writes them
    *("p", "b", "t", "d", "k", "ɡ", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "tʃ", "dʒ"),
    *("m", "n", "ŋ", "l", "ɹ", "w", "j", "ɾ"),
    # vowels and diphthongs
    *("iː", "ɪ", "eɪ", "ɛ", "æ", "ɑː", "ɔː", "oʊ", "ʊ", "uː", "ʌ", "ə", "ɚ", "ɜː", "aɪ", "aʊ", "ɔɪ", "ɑːɹ", "ɛɹ"),
)
"""The General American phonemes a voice must hear (multi-letter ones are matched as a whole)."""
_LONGEST_FIRST = sorted(ENGLISH_PHONEMES, key=len, reverse=True)


def phoneme_counts(texts: list[str], espeak_voice: str) -> Counter[str]:
    """How often each phoneme of `ENGLISH_PHONEMES` occurs (longest match first) when espeak-ng (Piper's
    phonemizer) reads `texts`."""
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise PromptError("counting phonemes needs piper-tts: pip install 'plush[server]'") from exc
    phonemizer = EspeakPhonemizer()
    counts: Counter[str] = Counter()
    for text in texts:
        ipa = (
            unicodedata.normalize("NFC", "".join("".join(s) for s in phonemizer.phonemize(espeak_voice, text)))
            .replace("ˈ", "")
            .replace("ˌ", "")
        )
        position = 0
        while position < len(ipa):  # longest match first: "tʃ" is one phoneme, not "t" and "ʃ"
            match = next((p for p in _LONGEST_FIRST if ipa.startswith(p, position)), None)
            if match is not None:
                counts[match] += 1
            position += len(match) if match else 1
    return counts
