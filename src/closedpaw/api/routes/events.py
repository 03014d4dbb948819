"""``/api/events``: server-sent events, one ``action`` event per committed transition."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from closedpaw.api.deps import Auth, gate_of, settings_of
from closedpaw.errors import QuotaExceeded

router = APIRouter(tags=["events"])


@router.get("/api/events", responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request, p: Auth) -> StreamingResponse:
    """Server-sent events: one ``action`` event per committed transition (a user hears of
    its own actions only). At most ``max_streams_per_principal`` per principal; a stream whose
    token is revoked is closed within ``stream_recheck_s``."""
    gate = gate_of(request)
    settings = settings_of(request)
    counts: dict[str, int] = request.app.state.stream_counts
    if counts.get(p.name, 0) >= settings.api.max_streams_per_principal:
        raise QuotaExceeded(f"{p.name} has {counts[p.name]} event streams open, the most "
                            "allowed (max_streams_per_principal)")
    counts[p.name] = counts.get(p.name, 0) + 1
    token_hash: str = request.scope["state"]["token_hash"]
    recheck = settings.api.stream_recheck_s
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
    loop = asyncio.get_running_loop()

    def put(ev: dict[str, Any] | None) -> None:
        if queue.full():  # a reader too slow to keep up is cut off, not buffered forever
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            ev = None
        queue.put_nowait(ev)

    def push(ev: dict[str, Any]) -> None:
        if not p.sees_all and ev.get("requester") != p.name:
            return
        with contextlib.suppress(RuntimeError):  # loop closed
            loop.call_soon_threadsafe(put, ev)

    unsubscribe = gate.subscribe(push)
    request.app.state.streams.add(queue)

    cleaned = False

    def cleanup() -> None:
        """Once, whether the stream ran or the client left before it started (then only the
        background task runs it)."""
        nonlocal cleaned
        if cleaned:
            return
        cleaned = True
        unsubscribe()
        request.app.state.streams.discard(queue)
        counts[p.name] -= 1
        if not counts[p.name]:
            del counts[p.name]

    session_key: str | None = request.scope["state"].get("session_key")

    def still_valid() -> bool:
        if session_key is not None and not request.app.state.sessions.alive(session_key):
            return False   # a browser's stream ends with its session (logout, idle)
        row = gate.store.principal_by_hash(token_hash)
        return row is not None and row.name == p.name

    async def stream() -> AsyncIterator[str]:
        loop_time = asyncio.get_running_loop().time
        next_check = loop_time() + recheck
        try:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(),
                                                timeout=max(0.05, next_check - loop_time()))
                except TimeoutError:
                    ev = {}
                if loop_time() >= next_check:
                    if not await run_in_threadpool(still_valid):
                        yield "event: revoked\ndata: {}\n\n"
                        return
                    next_check = loop_time() + recheck
                    if not ev:
                        yield ": keep-alive\n\n"
                if ev is None:
                    return
                if ev:
                    yield f"event: action\ndata: {json.dumps(ev)}\n\n"
        finally:
            cleanup()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(cleanup))
