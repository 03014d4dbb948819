"""The assistant's routes: conversations (a turn answers a server-sent-event stream), the
providers, and ``POST /api/chat`` (a ``chat`` action through the gate).

``install_assistant(app, Auth)`` adds the router and wraps the app's lifespan: after the gate
starts, the assistant is built (with ``app.state.gateway`` when a caller set one, else the
default gateway: Ollama on 127.0.0.1:11434, then the embedded model) and the gate's ``chat``
executor is pointed at it; at shutdown both are closed.

SSE events of a turn: ``token`` {text}, ``tool_call`` {name, arguments, level, reason,
action_id, status}, ``approval_required`` {action_id, params_sha256, canonical_parameters},
``tool_result`` {name, action_id, status, content}, ``final`` {text, usage, latency_ms,
provider, model, stop_reason}, ``error`` {code, message}; the stream ends after ``final``,
``error`` or ``approval_required`` (the turn resumes on its own once the action is decided).
"""


import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from closedpaw.assistant import Assistant
from closedpaw.errors import ClosedPawError, PermissionDenied, TurnStateError
from closedpaw.orchestrator import ActionRequest, ActionStatus
from closedpaw.providers import Gateway
from closedpaw.security import Principal

__all__ = ["ChatBody", "ConversationOut", "MessageBody", "NewConversation", "install_assistant"]

PROVIDER = r"^[a-z][a-z0-9_-]{0,31}$"


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str | None = Field(default=None, pattern=PROVIDER)
    model: str | None = Field(default=None, max_length=200)
    title: str = Field(default="", max_length=200)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1, max_length=100_000)


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=100_000)
    conversation_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$")
    provider: str | None = Field(default=None, pattern=PROVIDER)
    model: str | None = Field(default=None, max_length=200)


class ConversationOut(BaseModel):
    conversation_id: str
    owner: str
    title: str
    provider: str | None
    model: str | None
    status: str = Field(description="idle, running or awaiting_approval")
    pending_action_id: str | None
    created_at: float
    updated_at: float


class MessageOut(BaseModel):
    id: int
    role: str
    provenance: str = Field(description="user, assistant, tool_result, external or system")
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str | None
    tool_name: str | None
    action_id: str | None
    provider: str | None
    model: str | None
    usage: dict[str, Any] | None
    created_at: float


class ConversationWithMessages(ConversationOut):
    messages: list[MessageOut]


class ConversationList(BaseModel):
    conversations: list[ConversationOut]


def _assistant(request: Request) -> Assistant:
    a: Assistant = request.app.state.assistant
    return a


def default_gateway(data_dir: Path) -> Gateway:
    """Ollama on 127.0.0.1:11434, then the embedded model, keys from the environment.
    MOVE TO SETTINGS AT MERGE: the providers section of the settings file and the vault's
    resolver belong to the composition root."""
    from closedpaw.providers.config import env_secret_resolver

    return Gateway.from_mapping({}, resolver=env_secret_resolver(),
                                models_dir=data_dir / "models")


def install_assistant(app: FastAPI, auth: Any, data_dir: Path) -> None:
    """Add the routes and hook the assistant into the app's lifespan. ``auth`` is the app's
    authenticated-principal dependency (``Annotated[Principal, Depends(...)]``)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            gateway = getattr(a.state, "gateway", None) or default_gateway(data_dir)
            orch = a.state.orchestrator
            assistant = await run_in_threadpool(Assistant, orch, gateway,
                                                **getattr(a.state, "assistant_options", {}))
            a.state.assistant = assistant
            a.state.gateway = gateway
            orch.chat_handler = assistant.handle_chat_action
            await run_in_threadpool(_announce, gateway)
            try:
                yield state
            finally:
                orch.chat_handler = None
                await run_in_threadpool(assistant.close)
                await run_in_threadpool(gateway.close)

    app.router.lifespan_context = lifespan
    app.include_router(_router(auth))


def _announce(gateway: Gateway) -> None:
    """Say which provider the assistant uses (``make run``)."""
    import sys

    try:
        name = gateway.default_name()
        p = gateway.get(name)
        sys.stderr.write(f"closedpaw: assistant: provider {name!r} ({p.locality}, model "
                         f"{p.default_model})\n")
    except ClosedPawError as e:
        sys.stderr.write(f"closedpaw: assistant: {' '.join(str(e).split())}\n")


def _router(Auth: Any) -> APIRouter:
    r = APIRouter(tags=["assistant"])

    @r.post("/api/conversations", status_code=201, response_model=ConversationOut)
    def create(body: NewConversation, request: Request, p: Auth) -> dict[str, Any]:
        """A new conversation owned by the caller (provider/model: the default when left
        out; every turn records which provider and model saw the data)."""
        return _assistant(request).create(p, provider=body.provider, model=body.model,
                                          title=body.title).to_dict()

    @r.get("/api/conversations", response_model=ConversationList)
    def list_conversations(request: Request, p: Auth) -> dict[str, Any]:
        """The caller's conversations (an admin sees all)."""
        return {"conversations": [c.to_dict() for c in
                                  _assistant(request).conversations(p)]}

    @r.get("/api/conversations/{conversation_id}", response_model=ConversationWithMessages)
    def get_conversation(conversation_id: str, request: Request, p: Auth) -> dict[str, Any]:
        a = _assistant(request)
        out = a.get(p, conversation_id).to_dict()
        out["messages"] = [m.to_dict() for m in a.messages(p, conversation_id)]
        return out

    @r.post("/api/conversations/{conversation_id}/cancel", response_model=ConversationOut)
    def cancel(conversation_id: str, request: Request, p: Auth) -> dict[str, Any]:
        return _assistant(request).cancel(p, conversation_id).to_dict()

    @r.post("/api/conversations/{conversation_id}/messages",
            responses={200: {"content": {"text/event-stream": {}}}})
    async def send(conversation_id: str, body: MessageBody, request: Request, p: Auth
                   ) -> StreamingResponse:
        """Run one turn; the answer is a server-sent-event stream of the turn's events."""
        a = _assistant(request)
        conv = await run_in_threadpool(a.get, p, conversation_id)   # 404 before the stream starts
        if conv.owner != p.name:
            raise PermissionDenied("only the conversation's owner can send to it")
        if conv.status != "idle":
            raise TurnStateError(f"conversation {conversation_id} is {conv.status}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def emit(ev: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, ev)

        def run() -> None:
            try:
                a.send(p, conversation_id, body.content, emit)
            except ClosedPawError as e:
                emit({"event": "error", "code": e.code, "message": str(e)[:2000]})
            except Exception:
                emit({"event": "error", "code": "internal_error",
                      "message": "internal error; the server log has the details"})
                raise
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        task = loop.run_in_executor(None, run)

        async def stream() -> AsyncIterator[str]:
            finished = False
            try:
                while True:
                    ev = await queue.get()
                    if ev is None:
                        finished = True
                        return
                    name = ev.get("event", "message")
                    data = {k: v for k, v in ev.items() if k != "event"}
                    yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
            finally:
                if not finished:   # the client went away: cancel the turn
                    with contextlib.suppress(ClosedPawError):
                        await run_in_threadpool(a.cancel, p, conversation_id)
                with contextlib.suppress(Exception):
                    await task

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    @r.get("/api/providers")
    async def providers(request: Request, p: Auth) -> dict[str, Any]:
        """Each provider: type, local or cloud, health, models."""
        gw: Gateway = request.app.state.gateway
        return {"providers": await run_in_threadpool(gw.describe)}

    @r.post("/api/chat")
    async def chat(body: ChatBody, request: Request, p: Auth) -> dict[str, Any]:
        """One turn as a ``chat`` action through the gate (low: approved by rule, audited).
        Answers the reply, the conversation id, token usage and latency."""
        orch = request.app.state.orchestrator
        params = body.model_dump(exclude_none=True)
        rec = await run_in_threadpool(orch.submit, p, ActionRequest(action_type="chat",
                                                                    parameters=params))
        done = await run_in_threadpool(_wait, request.app.state.assistant, orch, rec.id, p)
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

    return r


def _wait(assistant: Assistant, orch: Any, action_id: str, p: Principal) -> Any:
    rec = orch.get(action_id)
    if rec.status is ActionStatus.PENDING:
        return rec
    return assistant.wait_action(action_id)
