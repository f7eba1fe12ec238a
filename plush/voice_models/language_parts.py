"""Which language each part of a reply is in, by its script, so each part goes to a voice that can speak it.

A Korean reply is Hangul with the odd English word ("토끼는 영어로 rabbit이야."): that stays one part, in the
Korean voice, since a voice switch mid-sentence sounds worse than an accent. An English sentence inside a Korean
reply ("Rabbits love carrots!") is a part of its own, for the English voice. So the unit is the sentence: one with
any Hangul in it is Korean; one with Latin letters and no Hangul is English; one with neither (digits, emoji,
"...") goes with the sentence before it. Neighbouring sentences in the same language are one part again.
"""

from __future__ import annotations

import re

HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
LATIN = re.compile(r"[A-Za-z]")
SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


def language_of(text: str) -> str | None:
    """`ko` for text with Hangul, `en` for Latin letters without it, None for neither."""
    if HANGUL.search(text):
        return "ko"
    if LATIN.search(text):
        return "en"
    return None


def language_parts(text: str, default: str) -> list[tuple[str, str]]:
    """`text` as (language, part) in order; `default` for a start with no letters to tell by."""
    parts: list[tuple[str, str]] = []
    for sentence in SENTENCE_END.split(text.strip()):
        if not sentence:
            continue
        language = language_of(sentence) or (parts[-1][0] if parts else default)
        if parts and parts[-1][0] == language:
            parts[-1] = (language, f"{parts[-1][1]} {sentence}")
        else:
            parts.append((language, sentence))
    return parts
