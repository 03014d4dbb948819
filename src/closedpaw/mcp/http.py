"""The MCP server over streamable HTTP, mounted by the app factory at ``/mcp`` of
``closedpaw serve``, behind the API's guard (:mod:`closedpaw.api.guard`): the bearer token is
checked from the headers before any body is read, failures are rate limited per address and
audited as bounded summaries, and each principal's requests (REST and MCP alike) share its
rate limit. The guard's principal is the MCP client (every call audited under it); a
request that reaches this endpoint without one is refused (401), never a tool call.

MCP client sessions (``Mcp-Session-Id``) are bound to the principal that opened them (the
SDK answers another credential's requests 404, as if the session did not exist), capped in
number (``mcp_max_clients``, ``mcp_max_clients_per_principal``: over either a new one is
refused 429 ``quota_exceeded``), and ended after ``session_idle_s`` without a request: the
sandbox sessions they created are deleted with them and their ids refused afterwards.
Built in the API's lifespan, once the gate exists."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from closedpaw.mcp.bridge import McpBridge
from closedpaw.mcp.server import PRINCIPAL_SCOPE_KEY, build_server, principal_from_scope

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from closedpaw.gate import Gate
    from closedpaw.security import Principal

__all__ = ["MCP_PATH", "McpHttp"]

MCP_PATH = "/mcp"
_SESSION_HEADER = b"mcp-session-id"


class McpHttp:
    """An ASGI endpoint; :meth:`running` (entered by the API's lifespan) starts the SDK's
    session manager and a sweeper that closes the sandbox sessions of ended MCP sessions."""

    def __init__(self, gate_of: Callable[[], Gate], *, host: str = "127.0.0.1") -> None:
        self._gate_of = gate_of
        self._host = host
        self._sm: StreamableHTTPSessionManager | None = None
        self._bridge: McpBridge | None = None
        #: principal name -> the MCP session ids it opened (pruned against the SDK's live set)
        self._clients: dict[str, set[str]] = {}
        self._opening: dict[str, int] = {}
        self._lock = threading.Lock()
        self._max_clients = 256
        self._max_per_principal = 16

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        gate = self._gate_of()
        m = gate.settings.mcp
        self._max_clients, self._max_per_principal = m.mcp_max_clients, \
            m.mcp_max_clients_per_principal
        bridge = McpBridge(gate)
        srv = build_server(bridge, principal_from_scope)
        # plain JSON answers (no SSE stream per call): the tools return one result each
        srv.streamable_http_app(streamable_http_path=MCP_PATH, host=self._host,
                                json_response=True, session_idle_timeout=m.session_idle_s,
                                max_sessions=m.mcp_max_clients)
        sm = srv.session_manager
        async with sm.run(), anyio.create_task_group() as tg:
            self._sm, self._bridge = sm, bridge
            tg.start_soon(self._sweep, max(0.05, min(5.0, m.session_idle_s / 4)))
            try:
                yield
            finally:
                self._sm = self._bridge = None
                tg.cancel_scope.cancel()

    def _alive(self, mcp_session_id: str) -> bool:
        sm = self._sm
        # the SDK's live sessions (mcp==2.3.0, pinned): an ended one is removed at once
        return sm is not None and mcp_session_id in sm._server_instances

    async def _sweep(self, period: float) -> None:
        """Close the sandbox sessions of MCP sessions that ended (idle, DELETE)."""
        while True:
            await anyio.sleep(period)
            bridge = self._bridge
            if bridge is None:
                return
            with contextlib.suppress(Exception):   # the next round tries again
                await anyio.to_thread.run_sync(bridge.close_bound, self._alive)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        sm = self._sm
        if sm is None:
            await _error(send, 503, "unavailable", "the MCP endpoint is not running")
            return
        principal: Principal | None = (scope.get("state") or {}).get("principal")
        if principal is None:   # the guard authenticates every non-public path; fail closed
            await _error(send, 401, "unauthorized", "send Authorization: Bearer <token> (the "
                         "API's token; closedpaw token create)",
                         [(b"www-authenticate", b"Bearer")])
            return
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        # the SDK binds each MCP session to the credential that opened it
        user = AuthenticatedUser(AccessToken(token=str(scope["state"].get("token_hash", "")),
                                             client_id=principal.name, scopes=[]))
        scope = {**scope, PRINCIPAL_SCOPE_KEY: principal, "user": user}
        opening = scope.get("method") == "POST" and not any(
            k == _SESSION_HEADER for k, _ in scope.get("headers") or [])
        if not opening:
            await sm.handle_request(scope, receive, send)
            return
        with self._lock:
            # sessions open plus openings in flight: concurrent openings cannot pass the cap
            n = self._live_locked(principal.name) + self._opening.get(principal.name, 0)
            if n < self._max_per_principal:
                self._opening[principal.name] = self._opening.get(principal.name, 0) + 1
        if n >= self._max_per_principal:
            await _error(send, 429, "quota_exceeded", f"{principal.name} has {n} MCP sessions "
                         "open, the most allowed (mcp_max_clients_per_principal); end one "
                         "(DELETE /mcp) or let it expire")
            return
        opened: list[str] = []

        async def watching(message: Any) -> None:
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                for k, v in message.get("headers") or []:
                    if k.lower() == _SESSION_HEADER:
                        opened.append(v.decode("latin-1"))
            await send(message)
        try:
            await sm.handle_request(scope, receive, watching)
        finally:
            with self._lock:
                self._opening[principal.name] -= 1
                if not self._opening[principal.name]:
                    del self._opening[principal.name]
                if opened:
                    self._clients.setdefault(principal.name, set()).update(opened)

    def _live_locked(self, principal: str) -> int:
        mine = self._clients.get(principal)
        if not mine:
            return 0
        for s in [s for s in mine if not self._alive(s)]:
            mine.discard(s)
        if not mine:
            del self._clients[principal]
            return 0
        return len(mine)


async def _error(send: Any, status: int, code: str, message: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
