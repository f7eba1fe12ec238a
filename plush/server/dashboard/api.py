"""The JSON API behind the pages (documented at /docs, behind the login): turns, the live stream, charts,
Gemini use, devices, memory and persona."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from plush.errors import ConfigError, PlushError
from plush.server.dashboard.charts import HOUR_S, chart_data
from plush.server.dashboard.guard import session_of
from plush.server.dashboard.queries import LoggedTurn, TurnFilter
from plush.server.dashboard.state import DashboardState

router = APIRouter(prefix="/api", tags=["dashboard"])
POLL_S = 2.0
"""The live stream also looks at the database this often, for turns stored by another process."""


def state_of(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state


def turn_json(logged: LoggedTurn) -> dict[str, Any]:
    t = logged.record
    return {
        "rowid": logged.rowid,
        "id": t.id,
        "started_at": t.started_at,
        "source": t.source,
        "device_id": t.device_id,
        "conversation_id": t.conversation_id,
        "owner": t.owner,
        "language": t.language,
        "user_text": t.user_text,
        "reply_text": t.reply_text,
        "backend": t.backend,
        "backend_reason": t.backend_reason,
        "outcome": t.outcome,
        "safety": t.safety,
        "voices": t.voices,
        "ending": t.ending,
        "reason": t.reason,
        "error": t.error,
        "timings": t.timings,
        "prompt_tokens": t.prompt_tokens,
        "output_tokens": t.output_tokens,
    }


def turn_filter(
    source: str = "",
    device: str = "",
    backend: str = "",
    *,
    errors: bool = False,
    q: str = "",
    flagged: bool = False,
    reason: str = "",
) -> TurnFilter:
    return TurnFilter(
        source=source, device=device, backend=backend, errors_only=errors, flagged_only=flagged, reason=reason, text=q
    )


STREAM_BATCH = 100
"""Turns sent per round of the live stream; a longer backlog follows at once in the next rounds."""


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """The brain, the persona, turns in flight and plushes online."""
    return state_of(request).status()


@router.get("/turns")
async def turns(
    request: Request,
    *,
    source: str = "",
    device: str = "",
    backend: str = "",
    errors: bool = False,
    flagged: Annotated[bool, Query(description="Only turns the child-safety check stopped.")] = False,
    reason: Annotated[
        str, Query(description="How or why turns ended: an outcome, a safety category or an ending.", max_length=64)
    ] = "",
    q: Annotated[str, Query(description="Full-text search: every word must start a word of the turn.")] = "",
    before: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Turns, newest first; `before` (a rowid) pages back."""
    where = turn_filter(source, device, backend, errors=errors, q=q, flagged=flagged, reason=reason)
    return [turn_json(t) for t in await state_of(request).turn_log.turns(where, before=before, limit=limit)]


@router.get("/filters")
async def filters(request: Request) -> dict[str, list[str]]:
    """The sources, devices and brains the log holds."""
    return await state_of(request).turn_log.choices()


@router.get("/turns/{turn_id}")
async def turn(request: Request, turn_id: str) -> dict[str, Any]:
    """One turn with its prompt and stage start times (kept for turns since the server started)."""
    state = state_of(request)
    logged = await state.turn_log.turn(turn_id)
    if logged is None:
        raise HTTPException(404, f"there is no turn {turn_id}")
    return {**turn_json(logged), **state.trace_of(logged), "has_audio": state.feed.audio_path(turn_id) is not None}


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    request: Request,
    *,
    source: str = "",
    device: str = "",
    backend: str = "",
    errors: bool = False,
    flagged: bool = False,
    reason: str = "",
    q: str = "",
    after: int | None = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-sent events: one `turn` event per turn stored from now on (after row `after` when given).

    The session is checked again before every event and at every poll: once it ends (logout, a new password,
    expiry) the stream sends `end` and closes, so an open live log never outlives its login."""
    state = state_of(request)
    session = session_of(request.scope)
    where = turn_filter(source, device, backend, errors=errors, q=q, flagged=flagged, reason=reason)
    cursor = after if after is not None else await state.turn_log.last_rowid()
    yield ServerSentEvent(event="ready", data={"after": cursor})
    while not state.feed.closed.is_set() and not await request.is_disconnected():
        if await state.sessions.get(session.id) is None:
            yield ServerSentEvent(event="end", data={"reason": "the session ended: log in again"})
            return
        # The newest row first, then the matching rows up to it: a row stored between the two reads waits for
        # the next round instead of being skipped, and so does any row past a full batch.
        upto = await state.turn_log.last_rowid()
        batch = await state.turn_log.turns_after(cursor, where, upto=upto, limit=STREAM_BATCH)
        for logged in batch:
            if await state.sessions.get(session.id) is None:
                break  # ended mid-batch: the check above says so at once
            cursor = logged.rowid
            yield ServerSentEvent(event="turn", id=str(cursor), data=turn_json(logged))
        else:
            if len(batch) < STREAM_BATCH:
                cursor = max(cursor, upto)  # rows the filter skips move it on too
                await state.feed.wait(min(POLL_S, state.sessions.seconds_left(session)))


@router.get("/charts")
async def charts(request: Request, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24) -> dict[str, Any]:
    """Latency percentiles per stage per hour, turns per hour, brains and the share answered locally."""
    state = state_of(request)
    end = time.time()
    start = end - hours * HOUR_S
    return chart_data(await state.turn_log.since(start), start, end)


@router.get("/gemini")
async def gemini(request: Request) -> dict[str, Any]:
    """Gemini use against each configured budget (today's count follows Google's Pacific day)."""
    return await state_of(request).gemini()


@router.get("/devices")
async def devices(request: Request) -> list[dict[str, Any]]:
    """Every plush and client: online or not, last seen, address, version, recent errors."""
    return await state_of(request).devices()


class NewFact(BaseModel):
    text: str = Field(min_length=1, max_length=1000)
    owner: str = Field(min_length=1, max_length=100)


@router.get("/facts")
async def facts(request: Request) -> list[dict[str, Any]]:
    return [fact.__dict__ for fact in await state_of(request).companion.store.all_facts()]


@router.post("/facts", status_code=201)
async def add_fact(request: Request, fact: NewFact) -> dict[str, Any]:
    """Remember a fact for one owner (checked as `plush memory remember` checks it)."""
    try:
        return (await state_of(request).add_fact(fact.text, fact.owner)).__dict__
    except PlushError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.delete("/facts/{fact_id}")
async def remove_fact(request: Request, fact_id: int) -> dict[str, Any]:
    if not await state_of(request).companion.store.remove_fact(fact_id):
        raise HTTPException(404, f"there is no fact {fact_id}")
    return {"removed": fact_id}


@router.get("/conversations")
async def conversations(request: Request) -> list[dict[str, Any]]:
    return [c.__dict__ for c in await state_of(request).companion.store.list_conversations()]


@router.post("/conversations/{conversation_id:path}/reset")
async def reset_conversation(request: Request, conversation_id: str) -> dict[str, Any]:
    """Start a conversation afresh (its turns stay in the log and for recall)."""
    try:
        await state_of(request).reset_conversation(conversation_id)
    except PlushError as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"reset": conversation_id}


class PersonaText(BaseModel):
    text: str = Field(max_length=100_000)


@router.get("/persona")
async def persona(request: Request) -> dict[str, Any]:
    state = state_of(request)
    path = state.persona_file()
    return {"file": str(path) if path else None, "name": state.companion.persona.name, "text": state.persona_text()}


@router.put("/persona")
async def save_persona(request: Request, body: PersonaText) -> dict[str, Any]:
    """Replace the persona file with `text`, after the checks of `plush persona check` (400 names what is wrong)."""
    try:
        persona = state_of(request).save_persona(body.text)
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from exc
    return {"name": persona.name, "source": persona.source}


async def refresh_metrics(state: DashboardState) -> None:
    gemini = await state.gemini() if state.companion.router.budget is not None else None
    state.metrics.refresh(
        state.config.llm.gemini if gemini else None,
        requests_today=gemini["requests_today"] if gemini else 0,
        last_minute=(gemini["last_minute"]["requests"], gemini["last_minute"]["tokens"]) if gemini else (0, 0),
        online=state.presence.online_count(state.config.dashboard.online_window_s),
        in_flight=state.in_flight.count if state.in_flight is not None else 0,
    )
