"""The assistant's routes: conversations (a turn answers a server-sent-event stream), the
events of a conversation's turns (resumed ones too), the providers, and ``POST /api/chat`` (a
``chat`` action through the gate). The app factory's lifespan builds the gateway and the
assistant (see :func:`closedpaw.api.app.create_app`); these routes find them through
``deps.py``.

SSE events of a turn: ``token`` {text}, ``tool_call`` {name, arguments, level, reason,
action_id, status}, ``approval_required`` {action_id, params_sha256, canonical_parameters},
``tool_result`` {name, action_id, status, content}, ``final`` {text, usage, latency_ms,
provider, model, stop_reason}, ``error`` {code, message}. The stream of
``POST .../messages`` ends after ``final``, ``error`` or ``approval_required``; the turn then
resumes on its own once the action is decided, and ``GET .../events`` carries what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from closedpaw.api.deps import Auth, assistant_of, gate_of, gateway_of
from closedpaw.api.schemas import (
    ChatBody,
    ConversationList,
    ConversationOut,
    ConversationWithMessages,
    MessageBody,
    NewConversation,
)
from closedpaw.assistant import Assistant
from closedpaw.errors import ClosedPawError
from closedpaw.gate import ActionRequest, ActionStatus, Gate

__all__ = ["router"]

log = logging.getLogger("closedpaw.api")
router = APIRouter(tags=["assistant"])
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _sse(ev: dict[str, Any]) -> str:
    name = ev.get("event", "message")
    data = {k: v for k, v in ev.items() if k != "event"}
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@router.post("/api/conversations", status_code=201, response_model=ConversationOut)
def create(body: NewConversation, request: Request, p: Auth) -> dict[str, Any]:
    """A new conversation owned by the caller (provider/model: the default when left out;
    every turn records which provider and model saw the data)."""
    return assistant_of(request).create(p, provider=body.provider, model=body.model,
                                        title=body.title).to_dict()


@router.get("/api/conversations", response_model=ConversationList)
def list_conversations(request: Request, p: Auth) -> dict[str, Any]:
    """The caller's conversations (an admin sees all)."""
    return {"conversations": [c.to_dict() for c in assistant_of(request).conversations(p)]}


@router.get("/api/conversations/{conversation_id}", response_model=ConversationWithMessages)
def get_conversation(conversation_id: str, request: Request, p: Auth) -> dict[str, Any]:
    a = assistant_of(request)
    out = a.get(p, conversation_id).to_dict()
    out["messages"] = [m.to_dict() for m in a.messages(p, conversation_id)]
    return out


@router.post("/api/conversations/{conversation_id}/cancel", response_model=ConversationOut)
def cancel(conversation_id: str, request: Request, p: Auth) -> dict[str, Any]:
    return assistant_of(request).cancel(p, conversation_id).to_dict()


@router.post("/api/conversations/{conversation_id}/messages",
             responses={200: {"content": {"text/event-stream": {}}}})
async def send(conversation_id: str, body: MessageBody, request: Request, p: Auth
               ) -> StreamingResponse:
    """Run one turn; the answer is a server-sent-event stream of the turn's events. What
    stops a turn from starting (not found, not the owner, not idle) is an HTTP error before
    the stream; the checks and the turn share one worker thread."""
    a = assistant_of(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    begun: asyncio.Future[None] = loop.create_future()

    def emit(ev: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, ev)

    def tell(fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):   # the loop closed
            loop.call_soon_threadsafe(lambda: None if begun.done() else fn(*args))

    def run() -> None:
        began = False

        def started() -> None:
            nonlocal began
            began = True
            tell(begun.set_result, None)
        try:
            a.send(p, conversation_id, body.content, emit, started=started)
        except ClosedPawError as e:
            if not began:
                tell(begun.set_exception, e)
                return
            emit({"event": "error", "code": e.code, "message": str(e)[:2000]})
        except Exception as e:
            # the stream's end awaits this task with errors suppressed: log it here, where
            # the message sent to the client says it is
            log.exception("turn of conversation %s failed", conversation_id)
            if not began:
                tell(begun.set_exception, e)
                return
            emit({"event": "error", "code": "internal_error",
                  "message": "internal error; the server log has the details"})
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, None)

    task = loop.run_in_executor(None, run)
    await begun   # raises what stopped the turn from starting: the error handlers answer it

    async def stream() -> AsyncIterator[str]:
        finished = False
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    finished = True
                    return
                yield _sse(ev)
        finally:
            if not finished:  # the client went away: cancel the turn
                # shielded: the response's task group was cancelled when the client left,
                # and an await in its scope would be cancelled before the turn was
                with anyio.CancelScope(shield=True), contextlib.suppress(ClosedPawError):
                    await run_in_threadpool(a.cancel, p, conversation_id)
            with contextlib.suppress(Exception):
                await task

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/api/conversations/{conversation_id}/events",
            responses={200: {"content": {"text/event-stream": {}}}})
async def conversation_events(conversation_id: str, request: Request, p: Auth
                              ) -> StreamingResponse:
    """Server-sent events of this conversation's turns from now on, whoever started them:
    above all a turn resumed after an approval (its ``tool_result``, ``token``s, ``final``).
    Visible to the owner (and an admin); open until the client leaves or the server stops."""
    a = assistant_of(request)
    await run_in_threadpool(a.get, p, conversation_id)  # 404 unless visible to the caller
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)

    def put(ev: dict[str, Any] | None) -> None:
        if queue.full():  # a reader too slow to keep up is cut off, not buffered forever
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            ev = None
        queue.put_nowait(ev)

    def hear(conv_id: str, ev: dict[str, Any]) -> None:
        if conv_id == conversation_id:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(put, ev)

    off = a.subscribe(hear)
    streams: set[Any] = request.app.state.streams
    streams.add(queue)

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
                yield _sse(ev)
        finally:
            off()
            streams.discard(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/api/providers")
async def providers(request: Request, p: Auth) -> dict[str, Any]:
    """Each provider: type, local or cloud, health, models."""
    return {"providers": await run_in_threadpool(gateway_of(request).describe)}


@router.post("/api/chat")
async def chat(body: ChatBody, request: Request, p: Auth) -> dict[str, Any]:
    """One turn as a ``chat`` action through the gate (low: approved by rule, audited).
    Answers the reply, the conversation id, token usage and latency."""
    gate = gate_of(request)
    params = body.model_dump(exclude_none=True)
    rec = await run_in_threadpool(gate.submit, p, ActionRequest(action_type="chat",
                                                                parameters=params))
    done = await run_in_threadpool(_wait, assistant_of(request), gate, rec.id)
    out: dict[str, Any] = {"action_id": rec.id, "status": str(done.status),
                           "security_level": str(done.security_level)}
    if done.status is ActionStatus.COMPLETED and done.result is not None:
        out.update(done.result)
    elif done.status is ActionStatus.PENDING:
        out.update(params_sha256=done.params_sha256, reply="",
                   error="the chat action waits for an approval")
    else:
        out["error"] = done.error
    return out


def _wait(assistant: Assistant, gate: Gate, action_id: str) -> Any:
    rec = gate.get(action_id)
    if rec.status is ActionStatus.PENDING:
        return rec
    return assistant.wait_action(action_id)
