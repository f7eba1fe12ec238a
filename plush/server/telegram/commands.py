"""The bot's commands: /start /help /reset /remember /forget /facts /voice /status.

Each takes the sender's `ChatIdentity` (the bridge has already refused strangers), so a command acts on the same
conversation and the same owner's facts as the sender's messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from plush.server.companion import Companion
from plush.server.store import TurnRecord
from plush.server.telegram.chat_settings import MODES, ChatSettings, ReplyMode
from plush.server.telegram.identity import ChatIdentity

MAX_FACT_CHARS = 4000
RECENT_TURNS = 20
"""How many of the chat's last turns /status sums up by how they ended."""
COMMANDS = (
    ("start", "Say hello"),
    ("help", "What I can do"),
    ("reset", "Start a new conversation"),
    ("remember", "Remember something: /remember TEXT"),
    ("forget", "Forget a fact: /forget ID (from /facts)"),
    ("facts", "What I remember about you"),
    ("voice", "Answer with text, voice or both: /voice voice"),
    ("status", "Which brain answers now, and is the plush online"),
)
BRAIN_REASONS = {
    "primary": "Gemini answers",
    "no_api_key": "no GEMINI_API_KEY is set",
    "backend_llama": "the config asks for the local brain only",
    "retry_after": "Gemini asked us to wait a little",
    "circuit_open": "Gemini has been failing; trying it again soon",
    "daily_budget_spent": "today's free Gemini budget is used up",
    "client_daily_budget_spent": "this chat's share of today's Gemini budget is used up",
    "minute_budget_spent": "this minute's Gemini budget is used up; back within the minute",
    "client_minute_budget_spent": "this chat's share of this minute's Gemini budget is used up",
    "token_budget_spent": "this minute's Gemini token budget is used up; back within the minute",
    "local_llm_down": "the local brain keeps crashing and is paused; see the server's log",
    "shared_state_unreachable": "the servers' shared Redis does not answer, so Gemini's budget cannot be checked",
}
Say = Callable[[str], Awaitable[None]]
Presence = Callable[[str], str | None]
"""A plush's device id -> "online", "last seen 5 min ago"..., or None when the server cannot tell."""


class Commands:
    """Handlers for the bot's commands; `say` sends a line to the sender's chat."""

    def __init__(self, companion: Companion, chats: ChatSettings, presence: Presence | None = None) -> None:
        self.companion = companion
        self.chats = chats
        self.presence = presence

    async def run(self, name: str, args: list[str], who: ChatIdentity, chat_id: int, say: Say) -> None:
        handler = cast(Callable[..., Awaitable[None]], getattr(self, f"_{name}"))
        await handler(" ".join(args).strip(), who, chat_id, say)

    async def _start(self, _: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        name = self.companion.persona.name
        await say(f"Hello! I'm {name}. Write to me or send a voice note any time; /help shows what I can do.")

    async def _help(self, _: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        await say("\n".join(f"/{name} - {description}" for name, description in COMMANDS))

    async def _reset(self, _: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        """A new conversation: earlier turns leave the prompt's window (facts stay)."""
        await self.companion.store.reset_conversation(who.conversation_id)
        await say("Fresh start! I remember the facts you told me, but not our chat.")

    async def _remember(self, text: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        """A fact for every later prompt of this owner (their household, their plush's, or theirs alone)."""
        if not text:
            await say("Tell me what to remember: /remember my cat is called Momo")
            return
        fact = await self.companion.store.add_fact(text[:MAX_FACT_CHARS], who.conversation_id, owner=who.owner)
        await say(f"I'll remember that (#{fact.id}).")

    async def _forget(self, text: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        """Remove one of this owner's facts; another owner's fact is treated as unknown (never removed)."""
        wanted = text.lstrip("#")
        facts = await self.companion.store.list_facts(who.owner)
        if not wanted.isdigit() or int(wanted) not in {fact.id for fact in facts}:
            await say("Which one? /facts shows their numbers, e.g. /forget 3")
            return
        await self.companion.store.remove_fact(int(wanted))
        await say(f"Forgotten (#{wanted}).")

    async def _facts(self, _: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        facts = await self.companion.store.list_facts(who.owner)
        lines = [f"#{fact.id} {fact.text}" for fact in facts]
        await say("\n".join(lines) if lines else "I don't remember anything yet.")

    async def _voice(self, text: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        """How this chat gets its replies: text, voice, both, or auto (voice for voice notes)."""
        mode = text.lower()
        if mode not in MODES:
            now = self.chats.mode(chat_id)
            await say(
                f"I answer this chat with: {now}. Choose one: /voice text, /voice voice, /voice both, /voice auto"
            )
            return
        await self.chats.choose(chat_id, cast(ReplyMode, mode))
        meaning = {
            "auto": "a voice note for a voice note, text for text",
            "text": "text only",
            "voice": "voice notes only",
            "both": "text and a voice note",
        }[mode]
        await say(f"From now on I answer here with {meaning}.")

    async def _status(self, _: str, who: ChatIdentity, chat_id: int, say: Say) -> None:
        """Which brain answers now and why, today's Gemini use, and whether the chat's plush is online."""
        router = self.companion.router
        route = await router.now(who.device_id)
        why = BRAIN_REASONS.get(route.reason, route.reason)
        lines = [
            f"Persona: {self.companion.persona.name}",
            f"Brain now: {route.backend} ({why})",
            f"Brains: {router.description}",
        ]
        if router.budget is not None:
            used = await router.budget.requests_today()
            lines.append(f"Gemini requests today: {used} of {router.budget.config.requests_per_day or 'unlimited'}")
        if who.plush:
            seen = self.presence(who.plush) if self.presence is not None else None
            lines.append(f"Plush {who.plush}: {seen or 'unknown (the server does not track it)'}")
        lines.append(f"Replies here: {self.chats.mode(chat_id)}")
        recent = await self.companion.store.list_turns(RECENT_TURNS, conversation_id=who.conversation_id)
        if recent:
            lines.append(f"Last {len(recent)} turns here: {endings(recent)}")
        await say("\n".join(lines))


def endings(turns: Sequence[TurnRecord]) -> str:
    """How turns ended, most common first, each with its reasons: "3 answered · 1 blocked (weapons)"."""
    outcomes = Counter(t.outcome for t in turns)
    parts = []
    for outcome, count in outcomes.most_common():
        reasons = Counter(t.reason.replace("_", " ") for t in turns if t.outcome == outcome and t.reason)
        why = ", ".join(r if n == 1 else f"{r} ×{n}" for r, n in reasons.most_common())
        parts.append(f"{count} {outcome.replace('_', ' ')}" + (f" ({why})" if why else ""))
    return " · ".join(parts)


def command_args(context: Any) -> list[str]:
    return list(context.args or [])
