"""How close two texts of speech are: word and character error rates after normalising what speech cannot carry.

Used wherever Plush checks speech against text: the real-weight quality tests, `bench/speech_quality.py`, and a
cloned voice's round-trip score (Whisper hears sentences in the new voice). Case, punctuation and spacing are not
heard, so they are removed before scoring; digits and words are left as they are (Whisper writes "3" for "three"
and a test should see that). Scoring itself is jiwer's (a kept library), not our own edit distance.
"""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes inside words stay), single spaces; Hangul and other scripts kept."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _NOT_WORD.sub(" ", text)
    text = " ".join(word.strip("'") for word in text.split())
    return _SPACES.sub(" ", text).strip()


def word_error_rate(reference: str, heard: str) -> float:
    """Word errors (substitutions, deletions, insertions) per reference word, after `normalise`."""
    import jiwer

    ref, hyp = normalise(reference), normalise(heard)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or " "))


def character_error_rate(reference: str, heard: str) -> float:
    """Character errors per reference character, spaces ignored: the fair measure for Korean, which Whisper
    spaces differently from the reference."""
    import jiwer

    ref, hyp = normalise(reference).replace(" ", ""), normalise(heard).replace(" ", "")
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.cer(ref, hyp or " "))
