"""The MCP server over streamable HTTP, mounted by the app factory at ``/mcp`` of
``closedpaw serve``, behind the API's bearer token: the token's principal is the MCP client
(every call audited under it); a missing or unknown token is 401 (audited), never a tool
call. Built in the API's lifespan, once the gate exists."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from closedpaw.audit import AuditEvent
from closedpaw.mcp.bridge import McpBridge
from closedpaw.mcp.server import PRINCIPAL_SCOPE_KEY, build_server, principal_from_scope

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from closedpaw.gate import Gate

__all__ = ["MCP_PATH", "McpHttp"]

MCP_PATH = "/mcp"


class McpHttp:
    """An ASGI endpoint; :meth:`running` (entered by the API's lifespan) starts the SDK's
    session manager and the bridge, and closes every session's sandbox at the end."""

    def __init__(self, gate_of: Callable[[], Gate], *, host: str = "127.0.0.1") -> None:
        self._gate_of = gate_of
        self._host = host
        self._sm: StreamableHTTPSessionManager | None = None
        self._gate: Gate | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        gate = self._gate_of()
        bridge = McpBridge(gate)
        srv = build_server(bridge, principal_from_scope)
        # plain JSON answers (no SSE stream per call): the tools return one result each
        srv.streamable_http_app(streamable_http_path=MCP_PATH, host=self._host,
                                json_response=True)
        sm = srv.session_manager
        try:
            async with sm.run():
                self._sm, self._gate = sm, gate
                try:
                    yield
                finally:
                    self._sm = None
        finally:
            await anyio.to_thread.run_sync(bridge.close)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        sm, gate = self._sm, self._gate
        if sm is None or gate is None:
            await _error(send, 503, "unavailable", "the MCP endpoint is not running")
            return
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = await anyio.to_thread.run_sync(gate.authenticate, token.strip())
        if principal is None:
            client = (scope.get("client") or ("?", 0))[0]
            await anyio.to_thread.run_sync(lambda: gate.audit.append(
                AuditEvent.AUTH_FAILED, principal="anonymous",
                details={"path": MCP_PATH, "client": client,
                         "why": "no bearer token" if not token else "unknown token"}))
            await _error(send, 401, "unauthorized", "send Authorization: Bearer <token> (the "
                         "API's token; closedpaw token create)",
                         [(b"www-authenticate", b"Bearer")])
            return
        await sm.handle_request({**scope, PRINCIPAL_SCOPE_KEY: principal}, receive, send)


async def _error(send: Any, status: int, code: str, message: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
