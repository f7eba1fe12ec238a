"""Cut a stream of LLM text deltas into speakable pieces, so speech starts before the reply is complete.

A piece ends at a sentence end (. ! ? and their full-width forms, an ellipsis, or a newline) followed by a space,
or at the end of the text. "3.5" or "e.g.x" do not end a sentence because no space follows the dot. Finer rules
(clause boundaries for the first piece, abbreviations) belong here too as they come.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"""(?:[.!?…]+|[。！？]+)["'”’)\]]*(?=\s)|\n+""")


class SentenceChunker:
    """Feed deltas with `feed`; each call returns the pieces completed so far. `flush` returns the rest."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(self._buffer):
            piece = self._buffer[start : match.end()].strip()
            if piece:
                pieces.append(piece)
            start = match.end()
        self._buffer = self._buffer[start:]
        return pieces

    def flush(self) -> str | None:
        piece, self._buffer = self._buffer.strip(), ""
        return piece or None
