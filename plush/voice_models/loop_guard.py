"""Signs that Whisper is looping instead of transcribing: a token budget from the audio's length, repeated text.

Whisper was trained on 30 s windows that end in silence; given a shorter encoder input it often fails to emit
end-of-text and repeats the phrase it just heard ("What is the capital of France? What is the capital of ...")
until the token limit. Decoding options cannot fix that (`no_repeat_ngram_size` only makes it loop with
variations, `repetition_penalty` corrupts correct text), so the decoder is given a budget that speech of that
length cannot need, and the text is checked afterwards: a loop sends the utterance to the full window.
"""

from __future__ import annotations

import math
import re

TOKENS_PER_SECOND = 15.0
"""More tokens than a second of speech ever needs: English is ~4-6 Whisper tokens per second, fast Korean ~12
(1.1-1.7 tokens per syllable)."""
TOKEN_SLACK = 8
"""Added to the budget for punctuation and very short clips."""
REPEATED_WORDS = 3
"""A run of this many words that occurs twice (overlapping counts) is a loop."""

_NOT_A_WORD = re.compile(r"[^\w\s]+")
# The same 2+ characters three times in a row after spaces and punctuation are removed: loops in languages
# written without spaces ("ちゃうちゃうちゃう").
_REPEATED_RUN = re.compile(r"(\w{2,}?)\1{2,}")


def token_budget(seconds: float) -> int:
    """How many tokens speech of `seconds` may need, at most."""
    return math.ceil(TOKENS_PER_SECOND * max(seconds, 0.0)) + TOKEN_SLACK


def looks_like_loop(text: str) -> bool:
    """True when `text` repeats itself the way a looping decoder does.

    A person can say the same three words twice in one breath ("I want it, I want it"); that only costs the
    slower full-window decode, which then transcribes both.
    """
    words = _NOT_A_WORD.sub(" ", text.lower()).split()
    seen: set[tuple[str, ...]] = set()
    for start in range(len(words) - REPEATED_WORDS + 1):
        gram = tuple(words[start : start + REPEATED_WORDS])
        if gram in seen:
            return True
        seen.add(gram)
    return _REPEATED_RUN.search("".join(words)) is not None
