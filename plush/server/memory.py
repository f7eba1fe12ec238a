"""Conversation memory: the window of recent turns, long-term facts, and recall of older turns by their words.

Per conversation (a plush, a Telegram chat) the last `history_turns` answered turns become the prompt's history,
as many of the newest as fit in `max_tokens`: a turn too long for it (stored before every face held text to
`MAX_INPUT_CHARS`) ends the window there, so no stored turn can push the prompts after it past the model's context.
Facts the owner asked to keep ("remember that ...", "... 기억해 줘", or `plush memory remember`) and older turns
that share words with the new message (SQLite FTS5) go into a short memory note placed with the new message,
within a token budget: facts first (newest first), then the best-matching older turns.

Everything here is for one owner (a household, or a plush alone: see plush/owners.py): the window, the facts and
the recalled turns are that owner's only, so nothing one plush is told reaches another owner's prompt.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from plush.config import MemoryConfig
from plush.logs import get_logger
from plush.server.contract_limits import MAX_INPUT_CHARS
from plush.server.llm.base import Message, Prompt, approx_tokens
from plush.server.store import Fact, Store, TurnRecord

log = get_logger(__name__)
DAY_S = 86_400.0

# "remember that my birthday is May 3" / "please remember: ..." / "don't forget that ..."
_REMEMBER_EN = re.compile(
    r"^(?:(?:hey|hi|ok|okay)\b[^,!.]*[,!.]\s*)?(?:please\s+)?(?:remember|don'?t\s+forget|do\s+not\s+forget)"
    r"(?:\s+that)?\s*[:,]?\s+(?P<fact>.+?)[.!\s]*$",
    re.IGNORECASE | re.DOTALL,
)
# "기억해 줘: 내 생일은 5월 3일이야" (the request first)
_REMEMBER_KO_FIRST = re.compile(
    r"^(?:꼭\s*)?(?:기억해|잊지\s*마)\s*(?:줘요|줘|주세요|줄래|둬요|둬|두세요)?\s*[:,.!~]\s*(?P<fact>.+?)[.!~\s]*$"
)
# "내 생일은 5월 3일이야. 기억해 줘!" / "... 라는 거 꼭 기억해" (the request last)
_REMEMBER_KO_LAST = re.compile(
    r"^(?P<fact>.+?)[\s,.!~]*(?:(?:(?:이)?라는|(?<=다)는)\s*)?(?:거|것|걸|것을)?\s*(?:꼭\s*)?"
    r"(?:기억해|잊지\s*마)\s*(?:줘요|줘|주세요|줄래|둬요|둬|두세요|요)?[.!?~\s]*$"
)
_MIN_FACT_CHARS = 3
_REMINISCING = re.compile(r"(?:when|how|what|where|who|why|the time)\b", re.IGNORECASE)

_WORD = re.compile(r"\w+", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
# Korean particles (조사) that end a word: stripped so "토끼를" recalls "토끼가" (longest first).
_KO_PARTICLES = (
    "이랑", "에서", "에게", "한테", "으로", "까지", "부터", "처럼", "보다", "하고", "이나",
    "은", "는", "이", "가", "을", "를", "도", "에", "와", "과", "랑", "의", "로", "만", "야", "아", "나",
)  # fmt: skip
_STOP_WORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do", "does", "for", "from",
        "had", "has", "have", "he", "her", "him", "his", "how", "if", "in", "is", "it", "its", "me", "my", "no",
        "not", "of", "on", "or", "our", "she", "so", "that", "the", "their", "them", "then", "there", "they",
        "this", "to", "too", "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will",
        "with", "would", "you", "your", "yes", "hi", "hello", "hey", "ok", "okay", "please", "tell", "about",
        "just", "like", "know", "really", "remember", "don",
        "나", "너", "내", "네", "저", "제", "그", "이", "뭐", "왜", "좀", "안", "잘", "더", "또", "그리고",
        "그래", "응", "아니", "어", "음", "우리", "오늘", "지금", "나는", "너는", "내가", "니가", "기억해",
    }
)  # fmt: skip
_MAX_TERMS = 12


def extract_fact(text: str) -> str | None:
    """The fact in an explicit request to remember something, or None when the message is not one.

    Questions are never facts: "remember my name?", "내 이름 기억해?" ask the companion to recall, and
    "remember when we went to the park?" reminisces.
    """
    text = text.strip()
    if "?" in text or "？" in text:
        return None
    for pattern in (_REMEMBER_EN, _REMEMBER_KO_FIRST, _REMEMBER_KO_LAST):
        match = pattern.match(text)
        if match:
            fact = match.group("fact").strip(" \t\n,.:!~")
            if _REMINISCING.match(fact):
                return None
            return fact if len(fact) >= _MIN_FACT_CHARS else None
    return None


def search_terms(text: str) -> list[str]:
    """Words worth searching older turns for: no stop words, Korean particles stripped, at most a dozen."""
    terms: list[str] = []
    for token in _WORD.findall(text.lower()):
        word = _strip_particle(token) if _HANGUL.search(token) else token
        if len(word) < 2 or word in _STOP_WORDS or word.isdigit() or word in terms:
            continue
        terms.append(word)
    return terms[:_MAX_TERMS]


def _within(window: list[TurnRecord], budget: int) -> list[TurnRecord]:
    """The newest turns of `window` (oldest first) whose texts fit in `budget` tokens together."""
    kept: list[TurnRecord] = []
    for turn in reversed(window):
        cost = approx_tokens(turn.user_text) + approx_tokens(turn.reply_text) + 8
        if cost > budget:
            break
        kept.append(turn)
        budget -= cost
    return kept[::-1]


def _strip_particle(word: str) -> str:
    for particle in _KO_PARTICLES:
        if word.endswith(particle) and len(word) - len(particle) >= 2:
            return word[: -len(particle)]
    return word


@dataclass(frozen=True)
class Recollection:
    """What memory adds to one prompt."""

    history: tuple[Message, ...]
    facts: tuple[Fact, ...]
    recalled: tuple[TurnRecord, ...]

    def note(self) -> str:
        """The memory note the model reads before the owner's message ('' when there is nothing to add)."""
        lines: list[str] = []
        if self.facts:
            lines.append("Things your owner asked you to remember (in their words):")
            lines.extend(f"- {fact.text}" for fact in self.facts)
        if self.recalled:
            lines.append("Earlier conversations that may be relevant:")
            for turn in self.recalled:
                lines.append(f"- Owner said: {turn.user_text} / You answered: {turn.reply_text}")
        if not lines:
            return ""
        return "\n".join(["[Memory, for you only; do not read it out]", *lines, "[The owner now says]"])


class Memory:
    """Builds each prompt's history and memory note from the store, and keeps facts the owner asks for."""

    def __init__(self, store: Store, config: MemoryConfig) -> None:
        self.store = store
        self.config = config

    async def learn(self, conversation_id: str, user_text: str, *, owner: str) -> Fact | None:
        """Store the fact in an explicit "remember that ..." message for `owner`; None when there is none."""
        if not self.config.remember_phrases:
            return None
        fact_text = extract_fact(user_text)
        if fact_text is None:
            return None
        fact = await self.store.add_fact(fact_text, source=conversation_id, owner=owner)
        log.info("fact_remembered", conversation_id=conversation_id, owner=owner, fact_id=fact.id)
        return fact

    async def recollect(self, conversation_id: str, user_text: str, *, owner: str) -> Recollection:
        """The owner's window, facts and recalled turns for a new message, within the token budget."""
        cfg = self.config
        window = _within(await self.store.recent_turns(conversation_id, cfg.history_turns, owner=owner), cfg.max_tokens)
        history: list[Message] = []
        for turn in window:
            history.append(Message("user", turn.user_text))
            history.append(Message("assistant", turn.reply_text))
        budget = cfg.max_tokens
        facts: list[Fact] = []
        for fact in reversed(await self.store.list_facts(owner)):  # newest first
            cost = approx_tokens(fact.text) + 2
            if cost > budget:
                break
            facts.append(fact)
            budget -= cost
        recalled: list[TurnRecord] = []
        terms = search_terms(user_text)
        if cfg.recall_turns and terms and budget > 0:
            found = await self.store.search_turns(
                terms,
                limit=cfg.recall_turns,
                owner=owner,
                conversation_id=conversation_id if cfg.recall_scope == "conversation" else None,
                exclude=[turn.id for turn in window],
            )
            for turn in found:
                cost = approx_tokens(turn.user_text) + approx_tokens(turn.reply_text) + 8
                if cost > budget:
                    break
                recalled.append(turn)
                budget -= cost
        return Recollection(tuple(history), tuple(reversed(facts)), tuple(recalled))

    async def prompt(
        self,
        system: str,
        conversation_id: str,
        user_text: str,
        *,
        owner: str,
        speaker: str = "Assistant",
        examples: tuple[Message, ...] = (),
    ) -> tuple[Prompt, Recollection]:
        """The whole prompt for `owner`'s new message; `speaker` is the persona's name (see `Prompt.speaker`).

        The message is cut at `MAX_INPUT_CHARS`, the limit every face already refuses longer text by: the last
        guard, so a path that forgot its check still cannot hand the model more.

        `examples` (the persona's example exchanges) open the history, before the conversation's window: constant
        per persona, they stay part of the cacheable prefix."""
        user_text = user_text[:MAX_INPUT_CHARS]
        recollection = await self.recollect(conversation_id, user_text, owner=owner)
        history = (*examples, *recollection.history)
        prompt = Prompt(system, history, user_text, recollection.note(), speaker=speaker)
        return prompt, recollection

    async def prune(self, now: float | None = None) -> int:
        """Apply the retention setting; returns how many turns were deleted."""
        if not self.config.retention_days:
            return 0
        cutoff = (time.time() if now is None else now) - self.config.retention_days * DAY_S
        deleted = await self.store.delete_turns_before(cutoff)
        if deleted:
            log.info("turns_pruned", deleted=deleted, retention_days=self.config.retention_days)
        return deleted
