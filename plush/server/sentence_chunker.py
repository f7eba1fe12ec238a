"""Cut a stream of LLM text deltas into speakable pieces, so speech starts before the reply is complete.

The first piece is cut early, at the first clause boundary (a comma, semicolon, colon or dash, or a Korean
connective ending such as 좋고, 그런데, 있지만, 가면서, 먹어서), or at a word boundary when its first clause runs
long: that is what the owner hears first, so it sets the reply's latency. After it, pieces are whole sentences,
which Piper speaks with better intonation. A sentence ends at . ! ? … (or their full-width forms) followed by a
space, or at a newline; "3.5", "e.g." mid-sentence and "Dr. Kim" do not end one. A sentence that runs on without
an end is cut at a clause boundary or a space once it is too long to wait for.

`speakable` strips what a voice should not read out (emoji, markdown marks), so a piece of only emoji is skipped.
"""

from __future__ import annotations

import re
import unicodedata

_CLOSERS = "\"'”’)\\]»」』"
_SENTENCE_END = re.compile(rf"(?:[.!?…]+|[。！？]+)[{_CLOSERS}]*(?=\s)|\n+")
_CLAUSE_END = re.compile(
    rf"[,;:，、][{_CLOSERS}]*(?=\s)"  # punctuation
    r"|\s[-–—](?=\s)"  # a dash between spaces
    r"|[\uac00-\ud7a3](?:고|는데|은데|지만|면서|니까|어서|아서|해서|여서|으면|다가|거든|는데요|지만요)(?=\s)"
)
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "sr",
        "jr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "approx",
        "dept",
        "mt",
        "ft",
        "lt",
        "gen",
        "col",
        "capt",
    ]
)
_LEANING_WORDS = frozenset(
    {"a", "an", "the", "of", "to", "and", "or", "but", "in", "on", "at", "by", "for", "with", "from", "near",
     "my", "your", "his", "her", "our", "their", "its", "this", "that", "very", "so", "is", "are", "was"}
)  # fmt: skip
"""Words that lean on the next one: a piece should not end with them."""
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")
_MARKDOWN = re.compile(r"[*_#`~|>]+")


def _char_weight(ch: str) -> int:
    return 2 if ("\uac00" <= ch <= "\ud7a3" or "\u4e00" <= ch <= "\u9fff") else 1


def speech_weight(text: str) -> int:
    """About how long `text` takes to say, in Latin-letter units: a Hangul or CJK character counts as two."""
    return sum(_char_weight(ch) for ch in text)


def _longest_prefix_within(text: str, limit: int) -> int:
    """The length of the longest start of `text` whose speech weight is at most `limit` (one pass)."""
    weight = 0
    for index, ch in enumerate(text):
        weight += _char_weight(ch)
        if weight > limit:
            return index
    return len(text)


def speakable(text: str) -> str:
    """`text` without emoji, pictographs and markdown marks, whitespace collapsed ('' when nothing is left)."""
    kept = []
    for ch in _MARKDOWN.sub(" ", text):
        category = unicodedata.category(ch)
        if category == "So" or ch in "\u200d\ufe0f\ufe0e" or "\U0001f3fb" <= ch <= "\U0001f3ff":
            continue  # symbols and emoji, zero-width joiners, variation selectors, skin tones
        kept.append(ch)
    cleaned = " ".join("".join(kept).split())
    return cleaned if any(ch.isalnum() for ch in cleaned) else ""


class SentenceChunker:
    """Feed deltas with `feed`; each call returns the pieces completed so far. `flush` returns the rest.

    `first_min_weight`: how long (see `speech_weight`, letters and digits only) the first piece must be before a
    clause boundary may end it: one short word ("Well," "Oh," "음,"; not "I,"), so speech starts with the first
    breath of the reply; what follows
    keeps the speaker busy while the next piece is synthesized (a reply is spoken far slower than it streams).
    `first_max_weight`: a first clause that runs longer is cut at a space. `max_weight`: the same for the
    sentences after it.
    """

    def __init__(self, *, first_min_weight: int = 2, first_max_weight: int = 48, max_weight: int = 240) -> None:
        self.first_min_weight = first_min_weight
        self.first_max_weight = first_max_weight
        self.max_weight = max_weight
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1
        return pieces

    @property
    def pending(self) -> str:
        """What was fed but is not in a piece yet (as fed, spaces included)."""
        return self._buffer

    def flush(self) -> str | None:
        piece, self._buffer = self._buffer.strip(), ""
        return piece or None

    def _next_cut(self) -> int | None:
        """Where the next piece ends in the buffer, or None when it is not complete yet."""
        text = self._buffer
        for match in _SENTENCE_END.finditer(text):
            if not self._is_abbreviation(text, match):
                sentence_end = match.end()
                break
        else:
            sentence_end = None
        if self._emitted == 0:
            clause = self._clause_cut(text, limit=sentence_end)
            if clause is not None:
                return clause
        if sentence_end is not None:
            return sentence_end
        limit = self.first_max_weight if self._emitted == 0 else self.max_weight
        if speech_weight(text) > limit:
            return self._long_cut(text, limit)
        return None

    def _clause_cut(self, text: str, limit: int | None) -> int | None:
        """The first clause boundary (before `limit`) with enough speech before it for a natural first piece."""
        for match in _CLAUSE_END.finditer(text):
            if limit is not None and match.end() >= limit:
                return None
            if speech_weight("".join(filter(str.isalnum, text[: match.end()]))) >= self.first_min_weight:
                return match.end()
        return None

    def _long_cut(self, text: str, limit: int) -> int:
        """The last clause boundary, else the last space, that keeps the piece within `limit`."""
        end = _longest_prefix_within(text, limit)  # one pass: a long run-on reply must not cost n² steps
        head = text[:end]
        clauses = [m.end() for m in _CLAUSE_END.finditer(head) if m.end() > end // 2]
        if clauses:
            return clauses[-1]
        space = head.rstrip().rfind(" ")
        while space > 0 and head[:space].rsplit(" ", 1)[-1].lower() in _LEANING_WORDS:
            space = head[:space].rstrip().rfind(" ")  # "near the | horizon" would strand "the": cut before it
        return space if space > 0 else max(end, 1)

    @staticmethod
    def _is_abbreviation(text: str, match: re.Match[str]) -> bool:
        """A period after "Dr", "e.g" or an initial ("J. K. Rowling"; not "I" or "A") does not end a sentence."""
        if match.group(0) != ".":
            return False
        word = _WORD_BEFORE.search(text[: match.end()])
        if word is None:
            return False
        token = word.group(1)
        initial = len(token) == 1 and token.isascii() and token.isupper() and token not in "AI"
        return initial or token.lower() in _ABBREVIATIONS
