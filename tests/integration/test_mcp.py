"""The MCP server through the SDK's own client: over stdio (``closedpaw mcp`` as a real
subprocess) and over streamable HTTP (``/mcp`` of a live ``closedpaw serve`` app), real runc
sandboxes behind both."""

from __future__ import annotations

import json
import os
import sys
import time as _time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters

from closedpaw.gate import ActionStatus, Gate
from closedpaw.mcp import TOOLS
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.security import Principal
from closedpaw.settings import Settings
from tests.conftest import TEST_CGROUP, TEST_STATE, leftovers, require_runtime
from tests.mcp_clients import http_session
from tests.mcp_clients import stdio_session as mcp_stdio

ADMIN = Principal("admin", "admin")


@pytest.fixture
def mcp_settings(tmp_path: Path, built_images: dict[str, Any]) -> Iterator[Settings]:
    require_runtime("runc")
    images = next(iter(built_images.values())).rootfs.parents[1]
    # images (python, ...) from the shared store the session fixture builds
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, image_dir=images,
                    cgroup_parent=TEST_CGROUP, runtime="runc", pool_size=1)
    yield s
    assert not leftovers(s)


def env_of(s: Settings) -> dict[str, str]:
    return {"CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_STATE_DIR": str(s.state_dir),
            "CLOSEDPAW_CGROUP_PARENT": s.sandbox.cgroup_parent, "CLOSEDPAW_RUNTIME": "runc",
            "CLOSEDPAW_POOL_SIZE": "1", "CLOSEDPAW_IMAGE_DIR": str(s.images),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # the tree under test (a worktree run with PYTHONPATH=src), not the installed one
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH")
               else {})}


@asynccontextmanager
async def stdio_session(s: Settings) -> AsyncIterator[ClientSession]:
    exe = str(Path(sys.executable).with_name("closedpaw"))
    params = StdioServerParameters(command=exe, args=["mcp", "--principal", "agent-7"],
                                   env=env_of(s))
    async with mcp_stdio(params) as session:
        yield session


async def call(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    r = await session.call_tool(tool, args)
    assert not r.is_error, r.content
    out = r.structured_content
    if isinstance(out, dict) and set(out) == {"result"}:
        out = out["result"]
    assert isinstance(out, dict), r
    return out


async def call_error(session: ClientSession, tool: str, **args: Any) -> str:
    r = await session.call_tool(tool, args)
    assert r.is_error, r
    return " ".join(getattr(c, "text", "") for c in r.content)


async def exercise(session: ClientSession) -> dict[str, Any]:
    """The same script over any transport: tools, run_code, a session across calls, a gated
    action left pending. Returns the pending action."""
    tools = await session.list_tools()
    assert {t.name for t in tools.tools} == set(TOOLS)
    r = await call(session, "run_code", language="python", code="print(6*7)")
    assert (r["status"], r["stdout"], r["exit_code"]) == ("completed", "42\n", 0), r
    assert r["isolation"]["runtime"] == "runc" and r["isolation"]["network"] == "none"
    s = await call(session, "create_session", policy="default")
    sid = s["session_id"]
    await call(session, "run_cell", session_id=sid, code="x = 41")
    assert (await call(session, "run_cell", session_id=sid, code="x + 1"))["value"] == "42"
    await call(session, "write_file", session_id=sid, path="/tmp/note.txt", content="kept")
    assert (await call(session, "read_file", session_id=sid,
                       path="/tmp/note.txt"))["content"] == "kept"
    e = await call(session, "exec", session_id=sid, argv=["cat", "/tmp/note.txt"])
    assert e["stdout"] == "kept" and e["exit_code"] == 0
    assert (await call(session, "close_session", session_id=sid))["closed"]
    assert "no open session" in await call_error(session, "exec", session_id=sid,
                                                 argv=["true"])
    skills = (await call(session, "list_skills"))["skills"]
    assert {"filesystem", "code"} <= {k["name"] for k in skills}
    sk = await call(session, "run_skill", name="code",
                    arguments={"language": "python", "code": "print('via skill')"})
    assert sk["status"] == "completed" and sk["result"]["stdout"] == "via skill\n", sk
    fs = await call(session, "run_skill", name="filesystem",
                    arguments={"op": "read", "path": "/etc/shadow"})
    assert (fs["status"] == "failed" and "outside every allowlisted root" in fs["error"]) \
        or "no roots" in fs["error"], fs
    pending = await call(session, "submit_action", action_type="code_execution",
                         parameters={"language": "python", "code": "print('approved')"},
                         min_level="high")
    assert pending["status"] == "pending" and pending["requires_approval"]
    assert len(pending["params_sha256"]) == 64
    st = await call(session, "action_status", action_id=pending["action_id"])
    assert st["status"] == "pending"
    return pending


def test_stdio_with_the_sdk_client(mcp_settings: Settings) -> None:
    async def main() -> None:
        async with stdio_session(mcp_settings) as session:
            pending = await exercise(session)
            # approved by a human elsewhere (here: a gate on the same data directory)
            g = Gate(mcp_settings)
            try:
                g.approve(ADMIN, pending["action_id"], pending["params_sha256"])
                for _ in range(300):
                    if g.get(pending["action_id"]).status.final:
                        break
                    await anyio.sleep(0.1)
            finally:
                g.close()
            st = await call(session, "action_status", action_id=pending["action_id"])
            assert st["status"] == "completed", st
            assert st["result"]["stdout"] == "approved\n"
    anyio.run(main)
    g = Gate(mcp_settings)
    try:
        entries = g.audit.entries()
        calls = [e for e in entries if e.event == "mcp.call"]
        submitted = [e for e in entries if e.event == "action.submitted"]
        # every tool call is audited under the client: the acting ones as gate actions
        # (action.submitted via mcp:<tool>), the two that only read as mcp.call entries
        assert {e.details["tool"] for e in calls} == {"list_skills", "action_status"}
        assert {e.details.get("via") for e in submitted} == {
            f"mcp:{t}" for t in TOOLS if t not in ("list_skills", "action_status")}
        assert all(e.principal == "agent-7" for e in calls + submitted)
        types = {e.details["via"]: e.details["action_type"] for e in submitted}
        assert types["mcp:exec"] == types["mcp:create_session"] == "sandbox_session"
        assert g.audit.verify().ok
        assert json.dumps([e.details for e in calls])   # serialisable, no secrets objects
    finally:
        g.close()


def test_http_mount_behind_the_api_token(mcp_settings: Settings) -> None:
    from tests.integration.conftest import live_server, wait_for

    with live_server(mcp_settings) as live:
        gate: Gate = live.app.state.gate
        agent_token = gate.create_principal("agent", "user")
        # no token, or a wrong one: 401 before any tool runs, audited
        with live.client(token="") as c:
            r = c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        with live.client(token="cp_" + "x" * 40) as c:
            assert c.post("/mcp", json={}).status_code == 401

        async def refused() -> None:
            async with http_session(live.url, None):
                raise AssertionError("connected without a token")

        with pytest.raises(BaseException) as e:
            anyio.run(refused)
        assert "AssertionError" not in repr(e.value)

        async def main() -> dict[str, Any]:
            async with http_session(live.url, agent_token) as session:
                return await exercise(session)
        pending = anyio.run(main)
        # a human approves it through the API; the MCP client then sees it completed
        with live.client() as admin:
            r = admin.post(f"/api/actions/{pending['action_id']}/approve",
                           json={"params_sha256": pending["params_sha256"]})
            assert r.status_code == 200, r.text

        async def status() -> dict[str, Any]:
            async with http_session(live.url, agent_token) as session:
                for _ in range(300):
                    st = await call(session, "action_status", action_id=pending["action_id"])
                    if st["status"] not in ("approved", "executing"):
                        return st
                    await anyio.sleep(0.1)
                raise AssertionError("never finished")
        st = anyio.run(status)
        assert st["status"] == "completed" and st["result"]["stdout"] == "approved\n", st
        entries = gate.audit.entries()
        calls = [x for x in entries if x.event == "mcp.call"]
        assert calls and {x.principal for x in calls} == {"agent"}
        assert wait_for(lambda: gate.get(pending["action_id"]).status is
                        ActionStatus.COMPLETED, "completion")
    # refused requests are audited as one bounded summary per source (written at the latest
    # when the server stops), never one entry per request
    summaries = [x for x in gate.audit.entries() if x.event == "auth.failed.summary"]
    assert summaries and sum(x.details["total"] for x in summaries) >= 2


def test_stdio_server_leaves_the_running_servers_actions_alone(mcp_settings: Settings) -> None:
    """``closedpaw mcp`` opens a gate on the same data directory as a running ``closedpaw
    serve``: it must not mark that server's executing actions interrupted."""
    import time as _time

    from closedpaw.gate import ActionRequest
    from tests.integration.conftest import fake_manager

    def slow(argv: Any, stdin: bytes) -> tuple[int, bytes, bytes]:
        _time.sleep(4)
        return 0, b"slow\n", b""
    serve = Gate(mcp_settings, manager=fake_manager(mcp_settings, slow))
    try:
        serve.start()
        rec = serve.submit(ADMIN, ActionRequest(action_type="code_execution",
                                                parameters={"argv": ["slow"]}))
        for _ in range(100):
            if serve.get(rec.id).status is ActionStatus.EXECUTING:
                break
            _time.sleep(0.02)

        async def main() -> None:
            async with stdio_session(mcp_settings) as session:
                await session.list_tools()
        anyio.run(main)
        for _ in range(200):
            if serve.get(rec.id).status.final:
                break
            _time.sleep(0.05)
        assert serve.get(rec.id).status is ActionStatus.COMPLETED
    finally:
        serve.close()


def test_a_stdio_session_step_approved_by_another_process_runs_in_the_stdio_process(
        mcp_settings: Settings) -> None:
    """The session lives in ``closedpaw mcp``; a step on it that needs approval is decided
    by a person elsewhere (here a gate in the test's process, as ``closedpaw serve`` would):
    that gate must not run it (it has no such session) and the stdio process must run it
    when its client polls. Also: a plain action approved elsewhere is seen by the poll (no
    event crosses processes) instead of waiting out the poll's time."""
    serve = Gate(mcp_settings)
    serve.create_principal("admin", "admin")

    async def main() -> None:
        async with stdio_session(mcp_settings) as session:
            sid = (await call(session, "create_session", policy="default"))["session_id"]
            await call(session, "write_file", session_id=sid, path="/tmp/n.txt",
                       content="only in this session")
            step = await call(session, "submit_action", action_type="sandbox_session",
                              parameters={"op": "exec", "session_id": sid,
                                          "argv": ["cat", "/tmp/n.txt"]},
                              min_level="high")
            assert step["status"] == "pending", step
            approved = await anyio.to_thread.run_sync(
                lambda: serve.approve(ADMIN, step["action_id"], step["params_sha256"]))
            assert approved.runner not in (None, serve.instance_id)
            await anyio.sleep(1.0)   # the approving gate left it alone: still approved
            assert serve.get(step["action_id"]).status is ActionStatus.APPROVED
            t0 = _time.monotonic()
            done = await call(session, "action_status", action_id=step["action_id"],
                              wait_s=30)
            assert done["status"] == "completed", done
            assert done["result"]["stdout"] == "only in this session", done
            plain = await call(session, "submit_action", action_type="code_execution",
                               parameters={"language": "python", "code": "print(7)"},
                               min_level="high")
            await anyio.to_thread.run_sync(
                lambda: serve.approve(ADMIN, plain["action_id"], plain["params_sha256"]))
            out = await call(session, "action_status", action_id=plain["action_id"],
                             wait_s=30)
            assert out["status"] == "completed" and out["result"]["stdout"] == "7\n", out
            assert _time.monotonic() - t0 < 20   # neither waited out its 30 s
            await call(session, "close_session", session_id=sid)
    try:
        anyio.run(main)
    finally:
        serve.close()


def test_the_library_call_hears_its_own_actions_end(make_orch: Any, tmp_path: Path) -> None:
    """``McpBridge`` listens for an action's end from before it is submitted (an end that
    comes before ``submit`` returns is not missed) and answers each caller with its own
    action, whatever order they end in; ``wait_s=0`` answers at once with the current
    status, and ``action_status`` then long-polls to the end; a pending action never waits."""
    import threading

    from closedpaw.mcp import McpBridge

    release = {n: threading.Event() for n in ("1", "2", "3")}

    def handler(argv: Any, stdin: bytes) -> tuple[int, bytes, bytes]:
        if list(argv[:2]) == ["python3", "-c"] and argv[2].startswith("print("):
            n = argv[2][6]
            if n in release:
                assert release[n].wait(30)
            return 0, f"{n}\n".encode(), b""
        return 0, b"", b""
    from tests.integration.conftest import fake_manager, gate_settings

    s = gate_settings(tmp_path)
    gate = make_orch(s, manager=fake_manager(s, handler))   # sandboxes run the handler
    bridge = McpBridge(gate)
    me = Principal("agent-9", "user")
    # an end heard before submit() returned: an action with nothing to wait for
    fast = bridge.run_code(me, "python", "print(0)")
    assert (fast["status"], fast["stdout"]) == ("completed", "0\n"), fast
    out: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=lambda n=n: out.__setitem__(
        n, bridge.run_code(me, "python", f"print({n})"))) for n in ("1", "2", "3")]
    for t in threads:
        t.start()
    for n in ("3", "1", "2"):   # ends in another order than submitted
        release[n].set()
    for t in threads:
        t.join(60)
    assert {n: (r["status"], r["stdout"]) for n, r in out.items()} == {
        n: ("completed", f"{n}\n") for n in ("1", "2", "3")}, out
    assert len({r["action_id"] for r in out.values()}) == 3
    # wait_s=0: the current status at once; action_status long-polls to the end
    release["1"].clear()
    now = bridge.submit_action(me, "code_execution",
                               {"language": "python", "code": "print(1)"}, wait_s=0)
    assert now["status"] in ("approved", "executing"), now
    release["1"].set()
    done = bridge.action_status(me, now["action_id"], wait_s=30)
    assert (done["status"], done["result"]["stdout"]) == ("completed", "1\n"), done
    pending = bridge.submit_action(me, "code_execution", {"language": "python",
                                                          "code": "print(2)"},
                                   min_level="high")
    assert pending["status"] == "pending" and len(pending["params_sha256"]) == 64
    assert gate.get(pending["action_id"]).status is ActionStatus.PENDING


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_stdio_server_stopped_by_a_signal_deletes_its_sandboxes(mcp_settings: Settings,
                                                                  sig: str) -> None:
    """A client that ends ``closedpaw mcp`` with SIGTERM (or whose terminal hangs up), not by
    closing its stdin, while its code runs: the server still stops that code and deletes
    every sandbox (the session, the warm pools, the running one) before it exits, and the
    action is recorded interrupted (Python's default action for those signals is to die on
    the spot, leaving them for the next gc). Spoken over the pipe in the protocol's JSON-RPC,
    to keep the pid."""
    import signal
    import subprocess

    from mcp.types import LATEST_PROTOCOL_VERSION

    from tests.integration.conftest import wait_for

    exe = str(Path(sys.executable).with_name("closedpaw"))
    p = subprocess.Popen([exe, "mcp", "--principal", "agent-7"], env=env_of(mcp_settings),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    assert p.stdin is not None and p.stdout is not None

    def send(msg: dict[str, Any]) -> None:
        assert p.stdin is not None
        p.stdin.write(json.dumps({"jsonrpc": "2.0", **msg}).encode() + b"\n")
        p.stdin.flush()

    def answer(mid: int) -> dict[str, Any]:
        assert p.stdout is not None
        while True:
            line = p.stdout.readline()
            assert line, "the server closed its stdout"
            msg: dict[str, Any] = json.loads(line)
            if msg.get("id") == mid:
                return msg
    try:
        send({"id": 1, "method": "initialize", "params": {
            "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "signal-test", "version": "1"}}})
        assert "result" in answer(1)
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/call", "params": {
            "name": "create_session", "arguments": {"policy": "default"}}})
        made = answer(2)["result"]
        assert not made.get("isError") and made["structuredContent"]["session_id"], made
        assert any("state dir" in x for x in leftovers(mcp_settings))
        # and code running when the signal comes (its answer is never read)
        send({"id": 3, "method": "tools/call", "params": {
            "name": "run_code", "arguments": {"language": "python",
                                              "code": "import time; time.sleep(600)"}}})
        orch = Gate(mcp_settings)
        try:
            wait_for(lambda: [a for a in orch.list_actions(limit=50)
                              if a.action_type == "code_execution"
                              and a.status == ActionStatus.EXECUTING], "the code to run")
        finally:
            orch.close()
        p.send_signal(getattr(signal, sig))
        p.wait(60)
        left = leftovers(mcp_settings)   # at once: it exited after deleting them
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stdout.close()
        SandboxManager(mcp_settings).gc()
    assert not left, left
    orch = Gate(mcp_settings)   # no start(): as the stopped server recorded it
    try:
        ran = [a for a in orch.list_actions(limit=50) if a.action_type == "code_execution"]
        assert [(a.status, a.error) for a in ran] == [
            (ActionStatus.INTERRUPTED, "interrupted: the server stopped while it was executing")]
    finally:
        orch.close()
