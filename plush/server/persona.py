"""Personas: who the companion is, from one TOML file, assembled into a system prompt.

The prompt is built only from the persona file, never from per-turn data, so it stays byte-identical across
turns; that lets Gemini's implicit cache and llama.cpp's prefix cache reuse it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plush.errors import ConfigError
from plush.logs import get_logger
from plush.server.llm.base import Message
from plush.server.safety import CATEGORIES, SafetyCheck

log = get_logger(__name__)

BUILT_IN = ("en", "ko")
LANGUAGE_NAMES = {"en": "English", "ko": "Korean (한국어)", "ja": "Japanese (日本語)", "zh": "Chinese (中文)"}
"""What the system prompt calls a persona's language; any other code is named as written."""


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    user: str
    assistant: str


class Owner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    facts: list[str] = Field(default_factory=list)


_SWITCHES = ("enabled", "enable", "off", "disabled", "disable", "categories", "allow")


class SafetySpec(BaseModel):
    """`[safety]` in a persona file: it can tighten the child-safety check and reword its lines, never loosen it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    also_block: list[str] = Field(default_factory=list)
    """More words or phrases the toy does not engage in (category `persona`)."""
    lines: dict[str, str] = Field(default_factory=dict)
    """Category -> the line said instead, in the persona's language (see plush/server/safety/terms.toml)."""

    @model_validator(mode="before")
    @classmethod
    def _cannot_switch_off(cls, data: object) -> object:
        if isinstance(data, dict) and (switch := next((k for k in _SWITCHES if k in data), None)):
            raise ValueError(
                f"'{switch}' is not allowed: the child-safety check cannot be switched off or narrowed by a "
                "persona; it can only be tightened (also_block) or reworded (lines)"
            )
        return data

    @field_validator("lines")
    @classmethod
    def _known_categories(cls, lines: dict[str, str]) -> dict[str, str]:
        if unknown := sorted(set(lines) - set(CATEGORIES)):
            raise ValueError(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
        if empty := sorted(k for k, v in lines.items() if not v.strip()):
            raise ValueError(f"empty lines for {empty}: a flagged turn must still get a kind answer")
        return lines


class PersonaFile(BaseModel):
    """The schema of a persona TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    language: str = Field(min_length=2)
    age: str = ""
    style: str = Field(min_length=1)
    rules: list[str] = Field(default_factory=list)
    fallback_line: str = Field(min_length=1)
    """Said when no LLM can answer, so the plush never goes silent."""
    offline_line: str = ""
    """Said by the plush itself when it cannot reach the server (kept on the plush); empty: the fallback line."""
    refused_line: str = ""
    """Said instead of the local model's canned refusal ("I'm sorry, but I can't help with that."), which an
    everyday prompt ("I'm sad today.") can get from a small model; empty: the fallback line."""
    owner: Owner = Owner()
    examples: list[Example] = Field(default_factory=list)
    safety: SafetySpec = SafetySpec()


@dataclass(frozen=True)
class Persona:
    """A loaded persona and its ready-made system prompt."""

    spec: PersonaFile
    source: str
    system_prompt: str = field(init=False)
    examples: tuple[Message, ...] = field(init=False, repr=False)
    """The example exchanges, as turns that open every prompt's history (see `example_turns`)."""
    safety: SafetyCheck = field(init=False, repr=False)
    """The child-safety check for this persona: the built-in one, tightened by the file's `[safety]`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "system_prompt", build_system_prompt(self.spec))
        object.__setattr__(self, "examples", example_turns(self.spec))
        lines = {self.spec.language: dict(self.spec.safety.lines)} if self.spec.safety.lines else None
        object.__setattr__(self, "safety", SafetyCheck(self.spec.safety.also_block, lines))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def language(self) -> str:
        return self.spec.language


def build_system_prompt(p: PersonaFile) -> str:
    """Deterministic system prompt: same persona file -> same bytes."""
    lines = [f"You are {p.name}, a plush toy companion who talks out loud with your owner."]
    if p.age:
        lines.append(f"You act like you are {p.age} years old.")
    # The language's name, not its code: a small model told "the language with code 'ko'" answered "ko".
    language = LANGUAGE_NAMES.get(p.language, p.language)
    lines.append(f"Always answer in {language} unless the owner clearly uses another language.")
    lines.append(f"Speaking style: {p.style}")
    lines.append(
        "Your words are spoken by a voice synthesizer: no markdown, lists, emoji or stage directions; "
        "short spoken sentences."
    )
    if p.rules:
        lines.append("Rules:")
        lines.extend(f"- {rule}" for rule in p.rules)
    if p.owner.name or p.owner.facts:
        lines.append("About your owner:")
        if p.owner.name:
            lines.append(f"- Their name is {p.owner.name}.")
        lines.extend(f"- {fact}" for fact in p.owner.facts)
    return "\n".join(lines)


def example_turns(p: PersonaFile) -> tuple[Message, ...]:
    """The persona's examples as the conversation's opening turns, which every brain is shown before the real ones.

    Not in the system prompt: there, as `Owner:` / `Momo:` lines, Qwen2.5-Coder 0.5B went on writing the
    transcript (the owner's lines too), and quoted, it answered "I built a sandcastle!" with an example's words.
    As turns, both Qwen brains take the tone and answer what was said (bench/brain_quality.py).
    """
    return tuple(m for ex in p.examples for m in (Message("user", ex.user), Message("assistant", ex.assistant)))


def load_persona(spec: str) -> Persona:
    """Load a built-in persona by name (`en`, `ko`) or a persona TOML file by path."""
    if spec in BUILT_IN:
        text = resources.files("plush.server").joinpath("personas", f"{spec}.toml").read_text(encoding="utf-8")
        source = f"built-in persona '{spec}'"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"persona file not found: {path} (built-in personas: {', '.join(BUILT_IN)})")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return Persona(PersonaFile(**data), source)
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid persona: {problems}") from exc


class PersonaSource:
    """The current persona, reloaded when its file changes, so an owner can edit it without a restart.

    Each turn asks for `current()`, which costs one `stat` of the file. A file that no longer loads (a typo
    mid-edit) is logged and the last good persona stays in use. Built-in personas never change.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._path = None if spec in BUILT_IN else Path(spec).expanduser()
        self._persona = load_persona(spec)
        self._stamp = self._file_stamp()
        self._reported: tuple[int, int] | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> Persona:
        """The persona to use for the next turn."""
        stamp = self._file_stamp()
        if stamp is None or stamp in (self._stamp, self._reported):
            return self._persona
        try:
            persona = load_persona(self.spec)
        except ConfigError as exc:
            self._reported = stamp
            log.error("persona_reload_failed", source=self.spec, error=str(exc))
            return self._persona
        self._persona, self._stamp, self._reported = persona, stamp, None
        log.info("persona_reloaded", source=self.spec, name=persona.name)
        return persona
