"""A small local model's canned refusal ("I'm sorry, but I can't help with that."), caught before a child hears it.

Instruct models as small as Qwen2.5 0.5B learned to refuse from their tuning data, and at greedy decoding which
prompts they refuse depends on the CPU's kernels: "I'm sad today." was answered kindly on one machine (AVX-512)
and refused on another (AVX2), from the same weights and prompt. A refusal is never what a sad child should
hear, and no prompt wording removes the reflex on every machine, so the router holds the reply's first words
until they are clearly not such a refusal; one that is gets the persona's `refused_line` instead. The risky
prompts a refusal would be right for never reach the brain: the child-safety check answers them first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

HOLD_CHARS = 48
"""How much of the reply's start is held back for the check (a canned refusal says itself in its first words)."""
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry,? but i (?:can'?t|cannot)|sorry,? (?:but )?i (?:can'?t|cannot)|i (?:can'?t|cannot) "
    r"(?:help|assist)|as an ai|i'?m (?:just )?an ai|죄송하지만|죄송합니다[,.!]?\s*(?:저는|하지만|그)|도와드릴 수 없)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?。！？]\s|[.!?。！？]$")


def decided(start: str) -> bool:
    """Whether enough of the reply has come to tell: `HOLD_CHARS`, or its first sentence whole."""
    return len(start) >= HOLD_CHARS or bool(_SENTENCE_END.search(start))


def is_canned_refusal(start: str) -> bool:
    """Whether the reply opens as a canned refusal."""
    return bool(_REFUSAL.search(start))


async def without_canned_refusal(deltas: AsyncIterator[str], refused: list[str]) -> AsyncIterator[str]:
    """The reply's deltas, its start held back until `decided`; a reply that opens as a canned refusal ends
    there, unsaid, with its start put in `refused` (the caller closes the stream: the model stops at once)."""
    held: str | None = ""
    async for delta in deltas:
        if held is None:
            yield delta
            continue
        held += delta
        if not decided(held):
            continue
        if is_canned_refusal(held):
            refused.append(held)
            return
        yield held
        held = None
    if held:
        if is_canned_refusal(held):
            refused.append(held)
        else:
            yield held
