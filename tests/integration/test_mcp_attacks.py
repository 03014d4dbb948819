"""Attacks on the MCP server through the SDK's own client and raw HTTP, against a live
``closedpaw serve`` app on 127.0.0.1 with real runc sandboxes: a ``user`` client approving its
own high action, acting on another principal's sandbox session or MCP session, reaching around
the gate through any tool, parameters changed after approval; floods of requests, failed
authentications and MCP sessions; an idle session's ids used after it expired."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import text

from closedpaw.audit.events import canonical_json
from closedpaw.gate import ActionStatus, Gate
from closedpaw.mcp import TOOLS
from closedpaw.settings import Settings
from tests.integration.conftest import live_server, wait_for
from tests.integration.test_mcp import call, call_error, http_session, mcp_settings

__all__ = ["mcp_settings"]   # the fixture, shared with test_mcp.py

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"}}}
HDRS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _approve(live: Any, token: str, aid: str, sha: str) -> httpx.Response:
    with live.client(token=token) as c:
        return c.post(f"/api/actions/{aid}/approve", json={"params_sha256": sha})


def test_a_user_client_cannot_approve_its_own_act_on_others_or_reach_around_the_gate(
        mcp_settings: Settings, tmp_path: Path) -> None:
    with live_server(mcp_settings) as live:
        gate: Gate = live.app.state.gate
        alice = gate.create_principal("alice", "user")
        bob = gate.create_principal("bob", "user")
        canary = Path("/tmp") / f"closedpaw-mcp-canary-{uuid.uuid4().hex}"

        async def main() -> None:
            async with http_session(live.url, alice) as s:
                await attack(s)

        async def attack(s: Any) -> None:
            # only the documented tools exist: none approves, decides or reads the audit
            assert {t.name for t in (await s.list_tools()).tools} == set(TOOLS)
            sess = await call(s, "create_session", policy="default")
            sid = sess["session_id"]
            await call(s, "write_file", session_id=sid, path="/tmp/mine", content="alice's")
            # a high action: pending with its id, hash and how to poll
            hi = await call(s, "submit_action", action_type="sandbox_session",
                            parameters={"op": "exec", "session_id": sid,
                                        "argv": ["sh", "-c", "echo approved"]},
                            min_level="high")
            assert hi["status"] == "pending" and len(hi["params_sha256"]) == 64
            assert "action_status" in hi["poll_with"]
            # approving through any tool: there is none; submitting an "approval" as an
            # action only makes another pending (unparseable) action, never a decision
            for t in ("approve", "action_approval", "approval"):
                fake = await call(s, "submit_action", action_type=t, parameters={
                    "action_id": hi["action_id"], "params_sha256": hi["params_sha256"]})
                assert fake["status"] == "pending" and fake["security_level"] == "high"
            # the long poll answers within its bound and the action is still pending
            t0 = time.monotonic()
            st = await call(s, "action_status", action_id=hi["action_id"], wait_s=1)
            assert st["status"] == "pending" and time.monotonic() - t0 < 30
            # reaching around the gate: a host file, the network, a secret: all high
            # (pending), nothing ran; the session's write_file stays in the sandbox
            for at, params in (("file_read", {"path": "/etc/shadow"}),
                               ("file_write", {"path": str(canary), "content": "x"}),
                               ("network_request", {"url": "http://127.0.0.1:9/"}),
                               ("secret_read", {"name": "ANY"})):
                r = await call(s, "submit_action", action_type=at, parameters=params)
                assert r["status"] == "pending" and "result" not in r, (at, r)
            r = await call(s, "write_file", session_id=sid, path=f"/../../..{canary}",
                           content="escaped?")
            assert r["status"] == "completed"
            assert not canary.exists()
            # a tool's own arguments that do not parse are refused outright
            assert "invalid_request" in await call_error(
                s, "exec", session_id="../../etc", argv=["true"])
            assert "invalid_request" in await call_error(
                s, "run_code", language="cobol", code="x")

            # alice's own token on the REST API cannot approve what her MCP client asked for
            r = _approve(live, alice, hi["action_id"], hi["params_sha256"])
            assert r.status_code in (403, 409) and "self_approval" in r.text, r.text
            # bob (user) cannot see it, let alone approve it
            assert _approve(live, bob, hi["action_id"], hi["params_sha256"]).status_code \
                == 404
            assert gate.get(hi["action_id"]).status is ActionStatus.PENDING

            async with http_session(live.url, bob) as b:
                # alice's (open) sandbox session: every tool is refused, nothing changes
                for tool, args in (("exec", {"argv": ["cat", "/tmp/mine"]}),
                                   ("run_cell", {"code": "open('/tmp/mine').read()"}),
                                   ("read_file", {"path": "/tmp/mine"}),
                                   ("write_file", {"path": "/tmp/mine", "content": "bob's"}),
                                   ("close_session", {})):
                    msg = await call_error(b, tool, session_id=sid, **args)
                    assert "no open session" in msg and "alice's" not in msg, (tool, msg)
                # the same through submit_action, and alice's action's status
                r = await call(b, "submit_action", action_type="sandbox_session",
                               parameters={"op": "read_file", "session_id": sid,
                                           "path": "/tmp/mine"})
                assert r["status"] == "failed" and "no open session" in r["error"]
                assert "action_not_found" in await call_error(
                    b, "action_status", action_id=hi["action_id"])
            # not even an admin acts on alice's session through the gate
            with live.client() as admin:
                r = admin.post("/api/actions", json={
                    "action_type": "sandbox_session",
                    "parameters": {"op": "close", "session_id": sid}})
                assert r.status_code == 201
                aid = r.json()["action_id"]
                assert wait_for(lambda: gate.get(aid).status.final, "the end")
                assert "no open session" in (gate.get(aid).error or "")

            # bob with alice's MCP session id: the SDK answers as if it did not exist
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                r = await c.post("/mcp", json=INIT, headers={
                    **HDRS, "authorization": f"Bearer {alice}"})
                msid = r.headers["mcp-session-id"]
                call_ = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                    "name": "exec", "arguments": {"session_id": sid, "argv": ["true"]}}}
                r2 = await c.post("/mcp", json=call_, headers={
                    **HDRS, "authorization": f"Bearer {bob}", "mcp-session-id": msid,
                    "mcp-protocol-version": "2025-06-18"})
                r3 = await c.delete("/mcp", headers={"authorization": f"Bearer {bob}",
                                                     "mcp-session-id": msid})
                assert (r2.status_code, r3.status_code) == (404, 404)

            # parameters changed after approval are refused: the original hash does not
            # approve other parameters, and a pending row rewritten in the database (other
            # argv with its freshly computed hash) cannot be approved
            evil = {"action_type": "sandbox_session", "parameters": {
                **gate.get(hi["action_id"]).parameters, "argv": ["sh", "-c", "echo evil"]}}
            canon = canonical_json(evil)
            sha = hashlib.sha256(canon.encode()).hexdigest()
            r = _approve(live, live.token, hi["action_id"], sha)
            assert r.status_code == 409 and "hash_mismatch" in r.text
            with gate.store.engine.begin() as conn:
                conn.execute(text("UPDATE actions SET parameters = :p, params_sha256 = :s "
                                  "WHERE id = :i"), {"p": canon, "s": sha,
                                                     "i": hi["action_id"]})
            r = _approve(live, live.token, hi["action_id"], sha)
            assert r.status_code == 409 and "integrity" in r.text, r.text
            assert gate.get(hi["action_id"]).status is ActionStatus.PENDING

            # an admin approves an untouched high step: it runs, in alice's session, which
            # nobody else changed
            h2 = await call(s, "submit_action", action_type="sandbox_session",
                            parameters={"op": "read_file", "session_id": sid,
                                        "path": "/tmp/mine"}, min_level="high")
            assert _approve(live, live.token, h2["action_id"], h2["params_sha256"]) \
                .status_code == 200
            done = await call(s, "action_status", action_id=h2["action_id"], wait_s=60)
            assert done["status"] == "completed" and done["result"]["content"] == "alice's"
        anyio.run(main)
        entries = gate.audit.entries()
        refused = [e for e in entries if e.event == "approval.refused"]
        assert {e.details["reason"] for e in refused} >= {"self_approval", "hash_mismatch",
                                                          "integrity"}
        # alice's client ended (DELETE): her sandbox session went with it
        assert wait_for(lambda: [e for e in gate.audit.entries()
                                 if e.event == "sandbox.session.ended"], "the session's end")
        assert gate.audit.verify().ok
    assert not canary.exists()


def test_a_session_created_high_keeps_every_step_high(mcp_settings: Settings) -> None:
    """A session opened at high (here by the caller's min_level) makes each later step on it
    high as well, whatever the rules say of the step alone."""
    with live_server(mcp_settings) as live:
        gate: Gate = live.app.state.gate
        carol = gate.create_principal("carol", "user")

        async def main() -> tuple[dict[str, Any], str]:
            async with http_session(live.url, carol) as s:
                c = await call(s, "submit_action", action_type="sandbox_session",
                               parameters={"op": "create", "policy": "default"},
                               min_level="high")
                assert c["status"] == "pending"
                assert _approve(live, live.token, c["action_id"], c["params_sha256"]) \
                    .status_code == 200
                st = await call(s, "action_status", action_id=c["action_id"], wait_s=60)
                assert st["status"] == "completed", st
                sid = st["result"]["session_id"]
                step = await call(s, "exec", session_id=sid, argv=["true"])
                return step, sid
        step, sid = anyio.run(main)
        assert step["status"] == "pending" and step["security_level"] == "high", step
        assert "created at high" in step["level_reason"]
        # created after the approval, bound when polled: it ended with carol's client
        assert wait_for(lambda: [e for e in gate.audit.entries()
                                 if e.event == "sandbox.session.ended"
                                 and e.details["session_id"] == sid], "the session's end")


def test_rate_limit_and_failed_auth_on_mcp(mcp_settings: Settings) -> None:
    s = mcp_settings.with_(rate_limit_per_minute=20, summary_period_s=3600)
    with live_server(s) as live:
        gate: Gate = live.app.state.gate
        dave = gate.create_principal("dave", "user")
        erin = gate.create_principal("erin", "user")

        async def flood(token: str, n: int) -> list[int]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                r = await c.post("/mcp", json=INIT, headers={**HDRS,
                                                             "authorization": f"Bearer {token}"})
                codes = [r.status_code]
                msid = r.headers.get("mcp-session-id", "")
                for i in range(n):
                    r = await c.post("/mcp", json={"jsonrpc": "2.0", "id": i + 2,
                                                   "method": "tools/list"},
                                     headers={**HDRS, "authorization": f"Bearer {token}",
                                              "mcp-session-id": msid,
                                              "mcp-protocol-version": "2025-06-18"})
                    codes.append(r.status_code)
                    if r.status_code == 429:
                        assert r.json()["error"]["code"] == "rate_limited"
                        assert int(r.headers["retry-after"]) >= 1
                return codes
        codes = anyio.run(flood, dave, 40)
        assert codes[0] == 200 and 429 in codes
        assert codes.count(200) <= 20   # the burst, never more
        # the bucket is dave's, shared with his REST calls; erin is untouched
        with live.client(token=dave) as c:
            assert c.get("/api/status").status_code == 429
        assert 429 not in anyio.run(flood, erin, 3)

        # failed authentications on /mcp: 401 from the headers, then 429 per address
        async def bad(n: int) -> list[int]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                out = []
                for i in range(n):
                    r = await c.post("/mcp", json=INIT, headers={
                        **HDRS, "authorization": f"Bearer cp_{'y' * 40}{i}"})
                    out.append(r.status_code)
                return out
        got = anyio.run(bad, 30)
        assert set(got) <= {401, 429} and got[0] == 401 and 429 in got
    entries = gate.audit.entries()
    fails = [e for e in entries if e.event == "auth.failed.summary"]
    limited = [e for e in entries if e.event == "ratelimit.summary"]
    assert sum(e.details["total"] for e in fails) == 30   # one summary, not 30 entries
    assert any("/mcp" in json.dumps(e.details["sources"]) for e in limited)
    assert not [e for e in entries if e.event == "auth.failed"]   # no per-request fsync


def test_many_mcp_sessions_are_capped_and_idle_ones_end_with_their_sandboxes(
        mcp_settings: Settings) -> None:
    s = mcp_settings.with_(mcp_max_clients_per_principal=3, mcp_max_clients=5,
                           session_idle_s=3.0, rate_limit_per_minute=1000)
    with live_server(s) as live:
        gate: Gate = live.app.state.gate
        tokens = {n: gate.create_principal(n, "user") for n in ("frank", "gina", "hank")}

        async def open_many(token: str, n: int) -> list[tuple[int, str]]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                out = []
                for _ in range(n):
                    r = await c.post("/mcp", json=INIT, headers={
                        **HDRS, "authorization": f"Bearer {token}"})
                    out.append((r.status_code, r.headers.get("mcp-session-id", "")))
                    if r.status_code == 429:
                        assert r.json()["error"]["code"] == "quota_exceeded"
                return out

        # one principal: 3 sessions, then 429, however many it tries
        got = anyio.run(open_many, tokens["frank"], 12)
        assert [c for c, _ in got] == [200] * 3 + [429] * 9
        # others still get in, up to the server-wide cap (SDK: 503 beyond it)
        g2 = anyio.run(open_many, tokens["gina"], 2)
        assert [c for c, _ in g2] == [200, 200]
        g3 = anyio.run(open_many, tokens["hank"], 1)
        assert g3[0][0] == 503
        # wait for the idle ones to end: room again for hank
        assert wait_for(lambda: anyio.run(open_many, tokens["hank"], 1)[0][0] == 200,
                        "idle MCP sessions to end", timeout=30)

        async def sandbox_then_idle() -> tuple[str, str, str]:
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
                h = {**HDRS, "authorization": f"Bearer {tokens['gina']}"}
                r = await c.post("/mcp", json=INIT, headers=h)
                assert r.status_code == 200, r.text
                msid = r.headers["mcp-session-id"]
                h = {**h, "mcp-session-id": msid, "mcp-protocol-version": "2025-06-18"}
                await c.post("/mcp", json={"jsonrpc": "2.0",
                                           "method": "notifications/initialized"}, headers=h)
                r = await c.post("/mcp", headers=h, json={
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                        "name": "create_session", "arguments": {"policy": "default"}}})
                out = r.json()["result"]["structuredContent"]
                return msid, out["session_id"], out["sandbox_id"]
        msid, sid, sbid = anyio.run(sandbox_then_idle)
        mgr = gate.sandbox_manager()
        assert sbid in {sb.id for sb in mgr.list()}
        # idle: the MCP session ends, its sandbox session is deleted, both ids refused
        assert wait_for(lambda: sbid not in {sb.id for sb in mgr.list()},
                        "the idle session's sandbox to be deleted", timeout=30)

        async def reuse() -> tuple[int, str]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                r = await c.post("/mcp", headers={
                    **HDRS, "authorization": f"Bearer {tokens['gina']}", "mcp-session-id": msid,
                    "mcp-protocol-version": "2025-06-18"},
                    json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
            async with http_session(live.url, tokens["gina"]) as fresh:
                msg = await call_error(fresh, "exec", session_id=sid, argv=["true"])
            return r.status_code, msg
        code, msg = anyio.run(reuse)
        assert code == 404 and "no open session" in msg
        ended = [e for e in gate.audit.entries() if e.event == "sandbox.session.ended"]
        assert [e.details["session_id"] for e in ended] == [sid]


def test_sandbox_sessions_are_capped_per_principal_and_idle_ones_expire(
        mcp_settings: Settings) -> None:
    """Through the gate directly (the executor's registry): the caps and the idle timeout
    hold whatever the front door."""
    from closedpaw.gate import ActionRequest
    from closedpaw.security import Principal

    s = mcp_settings.with_(max_sandbox_sessions_per_principal=2, max_sandbox_sessions=3,
                           session_idle_s=2.0)
    gate = Gate(s)
    try:
        gate.start()

        def step(who: str, **p: Any) -> Any:
            rec = gate.submit(Principal(who, "user"), ActionRequest(
                action_type="sandbox_session", parameters=p))
            assert wait_for(lambda: gate.get(rec.id).status.final, "the step", timeout=90)
            return gate.get(rec.id)
        a1 = step("ivy", op="create", policy="default")
        a2 = step("ivy", op="create", policy="default")
        a3 = step("ivy", op="create", policy="default")
        assert a1.status is a2.status is ActionStatus.COMPLETED
        assert a3.status is ActionStatus.FAILED and "per_principal" in (a3.error or "")
        j1 = step("jay", op="create", policy="default")
        j2 = step("jay", op="create", policy="default")
        assert j1.status is ActionStatus.COMPLETED
        assert j2.status is ActionStatus.FAILED and "max_sandbox_sessions" in (j2.error or "")
        sid = a1.result["session_id"]   # type: ignore[index]
        assert step("ivy", op="exec", session_id=sid, argv=["true"]).status \
            is ActionStatus.COMPLETED
        time.sleep(2.5)
        late = step("ivy", op="exec", session_id=sid, argv=["true"])
        assert late.status is ActionStatus.FAILED and "no open session" in (late.error or "")
        gate.context.sessions.reap_idle()   # what the server's sweeper calls
        assert len(gate.context.sessions) == 0
        ended = [e for e in gate.audit.entries() if e.event == "sandbox.session.ended"]
        assert len(ended) == 3 and all("idle" in e.details["why"] for e in ended)
    finally:
        gate.close()
