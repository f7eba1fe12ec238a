"""Whisper's language codes, so that a config file can be checked without importing faster-whisper.

faster-whisper is an optional extra and slow to import, while the config is read by every command. A test keeps
this list equal to `faster_whisper.tokenizer._LANGUAGE_CODES`.
"""

from __future__ import annotations

WHISPER_LANGUAGE_CODES: tuple[str, ...] = tuple(
    [
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "zh",
        "yue",
    ]
)


def check_language_code(code: str) -> str:
    """`code` if Whisper knows it; otherwise a ValueError that says what was meant and lists the codes."""
    if code in WHISPER_LANGUAGE_CODES:
        return code
    hint = {"kr": "ko", "kor": "ko", "eng": "en", "jp": "ja", "cn": "zh", "iw": "he"}.get(code.lower())
    if code.lower() in WHISPER_LANGUAGE_CODES:
        hint = code.lower()
    meant = f" (did you mean '{hint}'?)" if hint else ""
    raise ValueError(
        f"'{code}' is not a Whisper language code{meant}; use two-letter codes such as 'ko' or 'en' "
        f"(all: {' '.join(WHISPER_LANGUAGE_CODES)})"
    )
