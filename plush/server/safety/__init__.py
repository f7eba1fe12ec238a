"""The child-safety check: what a child says and what any brain answers pass the same check, in English and Korean.

The toy's listener is often a child, and the local brain (whichever GGUF answers when Gemini is spent, failing or
absent) has no safety training a parent can count on. So every turn's words are checked before any brain sees
them, and every piece of a reply before it is spoken. A flagged turn is not given to the brain at all: the plush
answers with a calm, kind line for that topic (pointing to a trusted grown-up where that fits) and the turn is
stored as `blocked` with its category, for the parent's dashboard.

Why a reviewed word list rather than a library or a model: no library we could find covers these topics offline
in both languages. alt-profanity-check scores English profanity only, and korcen finds Korean swear words only;
neither knows self-harm, abuse, weapons, drugs or personal data. A local model as a judge would cost a second
prefill on every turn (seconds on a Pi) and can itself be talked round. A list is fast (microseconds a check),
the same on every machine, and a parent can read it: `terms.toml` beside this module. Its hit rate and false
alarms are measured on real prompts by `bench/brain_quality.py`.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

CATEGORIES = ("self_harm", "abuse", "sexual", "weapons", "drugs", "personal_data", "persona")
"""The topics the toy does not engage in. `persona`: words a persona file added (`[safety] also_block`)."""
Where = Literal["input", "output", "gemini"]
"""input: what the owner said; output: a piece of a brain's reply; gemini: Gemini's own filter (its category)."""
GEMINI_LINES = {
    "HARM_CATEGORY_SEXUALLY_EXPLICIT": "sexual",
    "HARM_CATEGORY_DANGEROUS_CONTENT": "weapons",
}
"""Which calm line follows a Gemini block of this category (any other: the `persona` line)."""
HANGUL = re.compile(r"[\uac00-\ud7a3]")
_LATIN = re.compile(r"[A-Za-z]")
_SPACES = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@dataclass(frozen=True)
class Flag:
    """Why a text was stopped: the category, where it was found and the words that matched."""

    category: str
    where: Where
    matched: str

    @property
    def label(self) -> str:
        """What the turn log stores: `input:self_harm`, `output:weapons`, `gemini:HARM_CATEGORY_HARASSMENT`."""
        return f"{self.where}:{self.category}"


@dataclass(frozen=True)
class _Rules:
    english: dict[str, re.Pattern[str]]
    korean: dict[str, re.Pattern[str]]
    lines: dict[str, dict[str, str]]
    """language -> category -> the calm line said instead."""


@cache
def _builtin() -> _Rules:
    text = resources.files("plush.server.safety").joinpath("terms.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    english = {cat: _alternation(data["en"][cat]) for cat in data["en"]}
    korean = {cat: _alternation(data["ko"][cat]) for cat in data["ko"]}
    lines = {lang: dict(data["lines"][lang]) for lang in data["lines"]}
    return _Rules(english, korean, lines)


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def normalize(text: str) -> str:
    """Case, width and apostrophes folded, runs of spaces made one: "I  DON\u2019T want" reads "i don't want"."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()).strip()


def compact(text: str) -> str:
    """Without spaces: Korean is checked this way, since spacing varies ("죽고 싶어", "죽고싶어")."""
    return _SPACES.sub("", text)


class SafetyCheck:
    """One check for what a child says and what a brain answers; a persona can add words but never remove any."""

    def __init__(self, also_block: Iterable[str] = (), lines: Mapping[str, Mapping[str, str]] | None = None) -> None:
        rules = _builtin()
        self._english = dict(rules.english)
        self._korean = dict(rules.korean)
        extra = [normalize(term) for term in also_block if term.strip()]
        if extra:
            words = [re.escape(t) for t in extra if not HANGUL.search(t)]
            hangul = [re.escape(compact(t)) for t in extra if HANGUL.search(t)]
            if words:
                self._english["persona"] = re.compile("|".join(rf"\b{w}\b" for w in words))
            if hangul:
                self._korean["persona"] = re.compile("|".join(hangul))
        self._lines = {lang: dict(by_cat) for lang, by_cat in rules.lines.items()}
        for lang, by_cat in (lines or {}).items():
            self._lines.setdefault(lang, {}).update(by_cat)

    def check(self, text: str, where: Where = "input") -> Flag | None:
        """The first category `text` falls in, or None when it is fine for a child."""
        plain = normalize(text)
        if not plain:
            return None
        for category, pattern in self._english.items():
            if match := pattern.search(plain):
                return Flag(category, where, match.group(0))
        if HANGUL.search(plain):
            tight = compact(plain)
            for category, pattern in self._korean.items():
                if match := pattern.search(tight):
                    return Flag(category, where, match.group(0))
        return None

    def line(self, flag: Flag, text: str, language: str) -> str:
        """The calm line said instead, in the language of `text` (Korean for Hangul), else the persona's."""
        if HANGUL.search(text):
            lang = "ko"
        elif _LATIN.search(text):
            lang = "en"
        else:
            lang = language
        by_cat = self._lines.get(lang) or self._lines["en"]
        category = GEMINI_LINES.get(flag.category, "persona") if flag.where == "gemini" else flag.category
        return by_cat.get(category) or by_cat.get("persona") or self._lines["en"]["persona"]
