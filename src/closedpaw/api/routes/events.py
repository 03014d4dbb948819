"""``/api/events``: server-sent events, one ``action`` event per committed transition."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from closedpaw.api.deps import Auth, gate_of

router = APIRouter(tags=["events"])


@router.get("/api/events", responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request, p: Auth) -> StreamingResponse:
    """Server-sent events: one ``action`` event per committed transition."""
    gate = gate_of(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
    loop = asyncio.get_running_loop()

    def put(ev: dict[str, Any] | None) -> None:
        if queue.full():  # a reader too slow to keep up is cut off, not buffered forever
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            ev = None
        queue.put_nowait(ev)

    def push(ev: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed
            loop.call_soon_threadsafe(put, ev)

    unsubscribe = gate.subscribe(push)
    request.app.state.streams.add(queue)

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if ev is None:
                    return
                yield f"event: action\ndata: {json.dumps(ev)}\n\n"
        finally:
            unsubscribe()
            request.app.state.streams.discard(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
