"""The MCP server (official ``mcp`` SDK, ``MCPServer``): the tools of :mod:`.bridge`, over
stdio (``closedpaw mcp``) or streamable HTTP (mounted by ``closedpaw serve`` at ``/mcp``,
behind the API's bearer token: see :mod:`.http`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer

from closedpaw.mcp.bridge import McpBridge

if TYPE_CHECKING:
    from closedpaw.security import Principal

__all__ = ["PRINCIPAL_SCOPE_KEY", "build_server", "client_session_of", "principal_from_scope"]

#: where the HTTP mount puts the authenticated principal in the ASGI scope
PRINCIPAL_SCOPE_KEY = "closedpaw.principal"

PrincipalOf = Callable[[Context], "Principal"]


def principal_from_scope(ctx: Context) -> Principal:
    """The principal the HTTP mount authenticated (never a header the client sent)."""
    from closedpaw.errors import AuthenticationFailed

    req = ctx.request_context.request
    scope = getattr(req, "scope", None)
    p = scope.get(PRINCIPAL_SCOPE_KEY) if isinstance(scope, dict) else None
    if p is None:
        raise AuthenticationFailed("no authenticated principal on this MCP request")
    return p  # type: ignore[no-any-return]


class _Guarded:
    """The bridge's methods, with our errors turned into tool errors the client sees as
    ``code: message`` (expected refusals, not server crashes)."""

    def __init__(self, bridge: McpBridge, principal_of: PrincipalOf) -> None:
        self._bridge = bridge
        self._principal_of = principal_of

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        fn = getattr(self._bridge, name)

        def call(ctx: Context, *args: Any, **kw: Any) -> dict[str, Any]:
            from mcp.server.mcpserver.exceptions import ToolError
            from pydantic import ValidationError

            from closedpaw.errors import ClosedPawError

            try:
                out: dict[str, Any] = fn(self._principal_of(ctx), *args, **kw)
                return out
            except ClosedPawError as e:
                raise ToolError(f"{e.code}: {e}") from None
            except ValidationError as e:
                where = ".".join(str(x) for x in (e.errors()[0].get("loc") or ())) \
                    if e.errors() else ""
                raise ToolError(f"invalid_request: {where}: "
                                f"{e.errors()[0].get('msg') if e.errors() else e}") from None
        return call


def client_session_of(ctx: Context) -> str | None:
    """The MCP client session (streamable HTTP's ``Mcp-Session-Id``, which the SDK has
    checked is open and the caller's before any tool runs; None over stdio): the sandbox
    sessions it creates end with it."""
    req = ctx.request_context.request
    headers = getattr(req, "headers", None)
    sid = headers.get("mcp-session-id") if headers is not None else None
    return sid if isinstance(sid, str) and sid else None


def build_server(raw: McpBridge, principal_of: PrincipalOf) -> MCPServer:
    bridge = _Guarded(raw, principal_of)
    # log_level: the SDK installs a rich handler on the root logger at this level (when it
    # has none); at INFO every request was rendered to stderr ("Processing request of type
    # CallToolRequest", each client HTTP request): milliseconds of CPU per call, and noise
    srv = MCPServer(name="closedpaw", version=_version(), log_level="WARNING",
                    instructions="ClosedPaw: run code in hardened sandboxes and submit "
                    "actions to a gate. High-risk actions answer 'pending' with an action id "
                    "and hash; a human approves them (closedpaw actions approve); poll "
                    "action_status.")

    @srv.tool(description="Run code once in a fresh sandbox (no network, no host files). "
              "Returns stdout, stderr, exit_code and the isolation stamp; or, when the gate "
              "needs an approval, status 'pending' with the action id and hash.")
    def run_code(language: str, code: str, ctx: Context, timeout_s: float = 60.0) \
            -> dict[str, Any]:
        return bridge.run_code(ctx, language, code, timeout_s)

    @srv.tool(description="Open a long-lived sandbox session (from a warm pool) under an "
              "execution policy (default python). Each session tool is a gate action "
              "(sandbox_session): medium under the built-in policies, else 'pending' with "
              "the action id and hash. Close it with close_session; idle sessions expire.")
    def create_session(ctx: Context, policy: str = "python") -> dict[str, Any]:
        return bridge.create_session(ctx, policy, client_session=client_session_of(ctx))

    @srv.tool(description="Run a command (argv list, no shell) in a session.")
    def exec(session_id: str, argv: list[str], ctx: Context,
             timeout_s: float = 60.0) -> dict[str, Any]:
        return bridge.exec(ctx, session_id, argv, timeout_s)

    @srv.tool(description="Run a code cell in the session's persistent interpreter "
              "(python or node): state is kept between cells.")
    def run_cell(session_id: str, code: str, ctx: Context, language: str = "python",
                 timeout_s: float = 60.0) -> dict[str, Any]:
        return bridge.run_cell(ctx, session_id, code, language, timeout_s)

    @srv.tool(description="Write a text file inside the session's sandbox.")
    def write_file(session_id: str, path: str, content: str, ctx: Context) -> dict[str, Any]:
        return bridge.write_file(ctx, session_id, path, content)

    @srv.tool(description="Read a text file inside the session's sandbox.")
    def read_file(session_id: str, path: str, ctx: Context) -> dict[str, Any]:
        return bridge.read_file(ctx, session_id, path)

    @srv.tool(description="Close a session and delete its sandbox.")
    def close_session(session_id: str, ctx: Context) -> dict[str, Any]:
        return bridge.close_session(ctx, session_id)

    @srv.tool(description="The skills you may run: built-in and installed, with their "
              "input schemas and declared capabilities.")
    def list_skills(ctx: Context) -> dict[str, Any]:
        return {"skills": bridge.list_skills(ctx)}

    @srv.tool(description="Run a skill through the gate with arguments matching its input "
              "schema. A skill declaring host paths or secrets needs an approval: the answer "
              "is then 'pending' with the action id and hash.")
    def run_skill(name: str, arguments: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return bridge.run_skill(ctx, name, arguments)

    @srv.tool(description="Submit any gate action (action_type, parameters, optional "
              "min_level). Low and medium run at once (waits up to wait_s seconds); high and "
              "critical answer 'pending' with the action id and hash, never waiting.")
    def submit_action(action_type: str, parameters: dict[str, Any], ctx: Context,
                      min_level: str | None = None, wait_s: float = 30.0) -> dict[str, Any]:
        return bridge.submit_action(ctx, action_type, parameters, min_level,
                                    wait_s)

    @srv.tool(description="The status (and, when finished, the result) of one of your "
              "actions. wait_s (at most 60): wait that long for it to be decided and finish "
              "(a long poll); answers earlier when it ends.")
    def action_status(action_id: str, ctx: Context, wait_s: float = 0.0) -> dict[str, Any]:
        return bridge.action_status(ctx, action_id, wait_s,
                                    client_session=client_session_of(ctx))

    return srv


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("closedpaw")
    except PackageNotFoundError:
        return "0+unknown"


def run_stdio(settings: Any, principal_name: str = "mcp") -> None:
    """``closedpaw mcp``: a gate on the data directory (the same database and audit log as
    ``closedpaw serve``) and the MCP server on stdin/stdout. The client is the principal
    ``principal_name`` (role user: it can never approve)."""
    from closedpaw.gate import Gate
    from closedpaw.security import Principal

    gate = Gate(settings)
    # no gate.start(): that marks executing actions interrupted, and `closedpaw serve` may be
    # running actions on this data directory right now
    import threading

    bridge = McpBridge(gate)
    me = Principal(principal_name, "user")
    stop = threading.Event()
    period = max(0.05, min(5.0, settings.mcp.session_idle_s / 4))

    def reap() -> None:   # sandbox sessions idle past session_idle_s are deleted
        while not stop.wait(period):
            try:
                gate.context.sessions.reap_idle()
            except Exception:   # the next round tries again
                continue
    reaper = threading.Thread(target=reap, name="closedpaw-mcp-reaper", daemon=True)
    reaper.start()
    once, done = threading.Lock(), threading.Event()

    def teardown() -> None:
        """Once, by whoever comes first (the end of stdin, a signal); the other waits for it."""
        if not once.acquire(blocking=False):
            done.wait()
            return
        try:
            stop.set()
            reaper.join(timeout=10)
            # every sandbox of this process, a running action's included (that action ends
            # interrupted): close() alone would wait for running code to finish first
            gate.close_sandboxes()
            bridge.close()
            gate.close()
        finally:
            done.set()
    _stop_on_signals(teardown)
    try:
        build_server(bridge, lambda _ctx: me).run("stdio")
    finally:
        teardown()


def _stop_on_signals(teardown: Callable[[], None]) -> None:
    """SIGTERM and SIGHUP (a client ending its server by a signal instead of closing stdin,
    a terminal hanging up) tear the server down like the end of its input, then end the
    process (128 + the signal): its sandbox sessions and warm pools are deleted first.
    Python's default for both is to die on the spot, which left them for the next gc. The
    teardown runs on a thread of its own: the SDK's stdin reader blocks in a worker thread
    that no cancellation reaches, so the event loop could not be ended by an exception, and
    the interrupted main thread may hold a lock the teardown needs. Later signals are
    ignored, so the teardown is not cut short (SIGKILL still ends it)."""
    import os
    import signal
    import threading

    def finish(code: int) -> None:
        try:
            teardown()
        finally:
            os._exit(code)

    def stop(signum: int, frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        threading.Thread(target=finish, args=(128 + signum,), name="closedpaw-mcp-stop"
                         ).start()

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
