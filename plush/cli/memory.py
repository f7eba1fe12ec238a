"""`plush memory` and `plush persona`: what the companion remembers, and who it is.

Memory commands work on the server's database directly (SQLite in WAL mode lets them run while the server is
up; a PostgreSQL database is the one every replica shares), so an owner can list, add and remove facts or
restart a conversation from a shell on the server. Each fact belongs to one owner (a household from `[owners]`,
or `device:<id>` for a plush in none; see plush/owners.py): listing shows every owner's unless `--owner` picks
one, and adding needs to know whose it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from plush.cli.console import ConfigOption, out
from plush.config import load_config
from plush.errors import PlushError
from plush.owners import LEGACY_OWNER, Owners

if TYPE_CHECKING:  # the server's modules load only when a command runs: a plush has no aiosqlite
    from plush.server.store import Conversation, Fact, Store

T = TypeVar("T")
OwnerFilter = Annotated[
    str | None, typer.Option("--owner", "-o", help="Only this owner's (a household, or device:<id>); default: all.")
]

memory_app = typer.Typer(help="What the companion remembers: facts about the owner and conversations.")
persona_app = typer.Typer(help="Check and show persona files.", no_args_is_help=True)


def _with_store(config: Path | None, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured database, run `work(store)`, close it."""
    from plush.server.store import Store

    location = load_config(config).server.database_location()

    async def run() -> T:
        async with await Store.open(location) as store:
            return await work(store)

    return asyncio.run(run())


def _print_table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> None:
    if not rows:
        out.print(empty)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M") if moment else "-"


@memory_app.callback(invoke_without_command=True)
def _memory_root(ctx: typer.Context, config: ConfigOption = None) -> None:
    """List the facts when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        facts(config=config)


async def _owner_to_give(store: Store, owners: Owners, asked: str | None) -> str:
    """The owner a fact goes to: the one asked for (checked), or the only household when none is asked for."""
    seen = [c.owner for c in await store.list_conversations()]
    if asked is not None:
        return owners.check(asked, seen)
    if (only := owners.default()) is not None:
        return only
    raise PlushError(
        f"whose fact is it? Add --owner OWNER (a household, or device:<id> for a plush in none); "
        f"owners: {owners.describe(seen)}"
    )


@memory_app.command()
def facts(owner: OwnerFilter = None, config: ConfigOption = None) -> None:
    """List the facts the companion keeps, with their owner (only that owner's prompts carry them)."""

    async def work(store: Store) -> list[Fact]:
        return await (store.all_facts() if owner is None else store.list_facts(owner))

    found = _with_store(config, work)
    rows = [(str(f.id), f.text, f.owner, _when(f.created_at), f.source) for f in found]
    empty = 'No facts yet. Say "remember that ..." to the plush, or run: plush memory remember "..."'
    if owner is not None:
        empty = f"No facts for {owner}."
    _print_table("Facts", ("id", "fact", "owner", "told", "where"), rows, empty)
    if any(f.owner == LEGACY_OWNER for f in found):
        out.print(
            f"Facts of '{LEGACY_OWNER}' were kept from before owners and reach no plush: give each to its owner"
            " with `plush memory move ID --owner OWNER`.",
            highlight=False,
        )


@memory_app.command()
def remember(
    text: Annotated[str, typer.Argument(help='The fact, e.g. "Mina\'s birthday is May 3".')],
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner", "-o", help="Whose fact: a household, or device:<id>; default: the household, if only one."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a fact for one owner: only their plushes' prompts carry it."""
    if not text.strip():
        raise PlushError("a fact needs some text")
    owners = Owners(load_config(config).owners)

    async def work(store: Store) -> Fact:
        return await store.add_fact(text, source="cli", owner=await _owner_to_give(store, owners, owner))

    fact = _with_store(config, work)
    out.print(f"remembered fact {fact.id} for {fact.owner}: {fact.text}", highlight=False)


@memory_app.command()
def move(
    fact_id: Annotated[int, typer.Argument(help="The fact's id, from `plush memory facts`.")],
    owner: Annotated[str, typer.Option("--owner", "-o", help="Its new owner: a household, or device:<id>.")],
    config: ConfigOption = None,
) -> None:
    """Give a fact to another owner (e.g. one kept from before owners, which reaches no plush)."""
    owners = Owners(load_config(config).owners)

    async def work(store: Store) -> Fact | None:
        return await store.move_fact(fact_id, await _owner_to_give(store, owners, owner))

    fact = _with_store(config, work)
    if fact is None:
        raise PlushError(f"there is no fact {fact_id}; see `plush memory facts`")
    out.print(f"fact {fact_id} now belongs to {fact.owner}: {fact.text}", highlight=False)


@memory_app.command()
def forget(
    fact_id: Annotated[int, typer.Argument(help="The fact's id, from `plush memory facts`.")],
    config: ConfigOption = None,
) -> None:
    """Remove a fact."""

    async def work(store: Store) -> bool:
        return await store.remove_fact(fact_id)

    if not _with_store(config, work):
        raise PlushError(f"there is no fact {fact_id}; see `plush memory facts`")
    out.print(f"forgot fact {fact_id}")


@memory_app.command()
def conversations(owner: OwnerFilter = None, config: ConfigOption = None) -> None:
    """List the conversations (one per plush, Telegram chat or text client) with their owner and turn counts."""

    async def work(store: Store) -> list[Conversation]:
        return [c for c in await store.list_conversations() if owner is None or c.owner == owner]

    rows = [(c.id, c.owner, str(c.turns), _when(c.last_turn_at), _when(c.reset_at)) for c in _with_store(config, work)]
    _print_table("Conversations", ("id", "owner", "turns", "last turn", "reset"), rows, "No conversations yet.")


@memory_app.command()
def reset(
    conversation: Annotated[str, typer.Argument(help="The conversation's id, from `plush memory conversations`.")],
    config: ConfigOption = None,
) -> None:
    """Start a conversation afresh: earlier turns leave its window (they stay in the log and for recall)."""

    async def work(store: Store) -> list[str]:
        known = [c.id for c in await store.list_conversations()]
        if conversation in known:
            await store.reset_conversation(conversation)
        return known

    known = _with_store(config, work)
    if conversation not in known:
        hint = f" (known: {', '.join(known)})" if known else ""
        raise PlushError(f"there is no conversation '{conversation}'{hint}")
    out.print(f"conversation {conversation} starts afresh")


@persona_app.command("check")
def persona_check(
    file: Annotated[str, typer.Argument(help="A persona TOML file (or a built-in name: en, ko).")],
) -> None:
    """Validate a persona file and summarise it; errors name the key to fix."""
    from plush.server.llm.base import approx_tokens
    from plush.server.persona import load_persona

    persona = load_persona(file)
    spec = persona.spec
    out.print(f"[green]ok[/]: {persona.source}", highlight=False)
    out.print(
        f"  {spec.name} ({spec.language}{', age ' + spec.age if spec.age else ''}): {len(spec.rules)} rules, "
        f"{len(spec.examples)} examples, {len(spec.owner.facts)} owner facts; "
        f"system prompt about {approx_tokens(persona.system_prompt)} tokens",
        highlight=False,
    )


@persona_app.command("show")
def persona_show(
    file: Annotated[str, typer.Argument(help="A persona TOML file or a built-in name.")] = "en",
) -> None:
    """Print the system prompt a persona file becomes."""
    from plush.server.persona import load_persona

    out.print(load_persona(file).system_prompt, markup=False, highlight=False)
