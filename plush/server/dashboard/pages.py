"""The dashboard's pages: server-rendered (Jinja2, autoescaped), with small scripts of our own for the live log
and the charts. Forms post with the session's CSRF token and come back with a notice (post/redirect/get)."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from plush.errors import ConfigError, PlushError
from plush.server.dashboard.api import state_of, turn_json
from plush.server.dashboard.guard import session_of
from plush.server.dashboard.plotly_bundle import inline_style_ids
from plush.server.dashboard.sessions import CSRF_FIELD
from plush.server.dashboard.waterfall import waterfall
from plush.server.store.records import ENDINGS

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def _templates(request: Request) -> Jinja2Templates:
    from plush.server.dashboard.web import templates

    return templates


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    state = state_of(request)
    base = {
        "csrf": session_of(request.scope).csrf,
        "csrf_field": CSRF_FIELD,
        "status": state.status(),
        "notice": request.query_params.get("notice", ""),
        "problem": request.query_params.get("problem", ""),
        "page": name.removesuffix(".html"),
    }
    return _templates(request).TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def back(path: str, *, notice: str = "", problem: str = "") -> RedirectResponse:
    query = f"?notice={quote(notice)}" if notice else f"?problem={quote(problem)}" if problem else ""
    return RedirectResponse(path + query, status_code=303)


@router.get("/")
async def live_log(request: Request) -> Response:
    return render(request, "log.html", choices=await state_of(request).turn_log.choices())


@router.get("/turns/{turn_id}")
async def turn_page(request: Request, turn_id: str) -> Response:
    state = state_of(request)
    logged = await state.turn_log.turn(turn_id)
    if logged is None:
        raise HTTPException(404, f"there is no turn {turn_id}")
    trace = state.trace_of(logged)
    return render(
        request,
        "turn.html",
        turn=turn_json(logged),
        ending=ENDINGS.get(logged.record.ending, ""),
        prompt=trace["prompt"],
        chart=waterfall(logged.record.timings, trace["stages"]),
        has_audio=state.feed.audio_path(turn_id) is not None,
        keep_audio=state.config.dashboard.keep_audio,
    )


@router.get("/turns/{turn_id}/audio")
async def turn_audio(request: Request, turn_id: str) -> FileResponse:
    path = state_of(request).feed.audio_path(turn_id)
    if path is None:
        raise HTTPException(404, "no audio was kept for this turn")
    return FileResponse(path, media_type="audio/wav")


@router.get("/charts")
async def charts_page(request: Request) -> Response:
    return render(request, "charts.html", gemini=await state_of(request).gemini(), plotly_styles=inline_style_ids())


@router.get("/devices")
async def devices_page(request: Request) -> Response:
    state = state_of(request)
    return render(
        request, "devices.html", devices=await state.devices(), window_s=state.config.dashboard.online_window_s,
        now=time.time(),
    )  # fmt: skip


@router.get("/memory")
async def memory_page(request: Request) -> Response:
    state = state_of(request)
    store = state.companion.store
    return render(
        request, "memory.html", facts=await store.all_facts(), conversations=await store.list_conversations(),
        owners=await state.owners(),
    )  # fmt: skip


@router.post("/memory/facts")
async def add_fact(request: Request, text: Annotated[str, Form()] = "", owner: Annotated[str, Form()] = "") -> Response:
    try:
        fact = await state_of(request).add_fact(text, owner)
    except PlushError as exc:
        return back("/memory", problem=str(exc))
    return back("/memory", notice=f"Remembered fact {fact.id} for {fact.owner}.")


@router.post("/memory/facts/{fact_id}/delete")
async def remove_fact(request: Request, fact_id: int) -> Response:
    if not await state_of(request).companion.store.remove_fact(fact_id):
        return back("/memory", problem=f"There is no fact {fact_id}.")
    return back("/memory", notice=f"Forgot fact {fact_id}.")


@router.post("/memory/conversations/reset")
async def reset_conversation(request: Request, conversation: Annotated[str, Form()] = "") -> Response:
    try:
        await state_of(request).reset_conversation(conversation)
    except PlushError as exc:
        return back("/memory", problem=str(exc))
    return back("/memory", notice=f"Conversation {conversation} starts afresh (its turns stay in the log).")


@router.get("/persona")
async def persona_page(request: Request) -> Response:
    state = state_of(request)
    return render(request, "persona.html", text=state.persona_text(), file=state.persona_file())


@router.post("/persona")
async def save_persona(request: Request, text: Annotated[str, Form()] = "") -> Response:
    state = state_of(request)
    try:
        persona = state.save_persona(text.replace("\r\n", "\n"))
    except ConfigError as exc:
        return render(request, "persona.html", 400, text=text, file=state.persona_file(), error=str(exc))
    return back("/persona", notice=f"Saved: {persona.name} answers from the next turn on.")


@router.post("/persona/copy")
async def copy_persona(request: Request) -> Response:
    path = state_of(request).copy_builtin_persona()
    return back(
        "/persona",
        notice=f'Now using {path}. To keep it after a restart, set server.persona = "{path}" in plush.toml.',
    )
