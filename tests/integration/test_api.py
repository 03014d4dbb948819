"""The HTTP API under a real uvicorn server on 127.0.0.1 (sandboxes: the FakeDriver)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from closedpaw.api import check_host
from closedpaw.api.guard import write_summaries
from closedpaw.errors import ConfigError
from closedpaw.gate import Gate
from closedpaw.security import new_token
from tests.integration.conftest import (
    Live,
    fake_manager,
    gate_settings,
    live_server,
    python_handler,
    wait_for,
)

CODE = {"language": "python", "code": "print(6*7)"}
HIGH = {"action_type": "code_execution", "parameters": CODE, "min_level": "high"}


@pytest.fixture
def live(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Live]:
    more: dict[str, Any] = getattr(request, "param", {})
    s = gate_settings(tmp_path, **more)
    orch = Gate(s, manager=fake_manager(s, python_handler))
    try:
        with live_server(s, orch) as lv:
            yield lv
    finally:
        orch.close()


def orch_of(live: Live) -> Gate:
    o: Gate = live.app.state.gate
    return o


def finished(c: httpx.Client, aid: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        a: dict[str, Any] = c.get(f"/api/actions/{aid}").json()
        return a if a["status"] in ("completed", "failed", "interrupted") else None
    return wait_for(check, f"action {aid}")  # type: ignore[no-any-return]


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def test_walkthrough_submit_review_approve_run(live: Live) -> None:
    with live.client() as c:
        r = c.post("/api/actions", json=HIGH)
        assert r.status_code == 201, r.text
        sub = r.json()
        assert set(sub) >= {"action_id", "status", "security_level", "requires_approval",
                            "params_sha256"}
        assert (sub["status"], sub["security_level"], sub["requires_approval"]) == \
            ("pending", "high", True)
        pend = c.get("/api/actions/pending").json()["actions"]
        assert [a["action_id"] for a in pend] == [sub["action_id"]]
        import hashlib
        assert hashlib.sha256(pend[0]["canonical_parameters"].encode()).hexdigest() == \
            sub["params_sha256"]
        aid = sub["action_id"]
        bad = assert_error(c.post(f"/api/actions/{aid}/approve",
                                  json={"params_sha256": "ab" * 32}), 409, "approval_refused")
        assert bad["reason"] == "hash_mismatch"
        ok = c.post(f"/api/actions/{aid}/approve", json={"params_sha256": sub["params_sha256"]})
        assert ok.status_code == 200 and ok.json()["decided_by"] == "admin"
        a = finished(c, aid)
        assert a["status"] == "completed"
        assert a["result"]["stdout"] == "42\n" and a["result"]["exit_code"] == 0
        assert a["result"]["isolation"]["runtime"] == "fake"
        assert_error(c.post(f"/api/actions/{aid}/approve",
                            json={"params_sha256": sub["params_sha256"]}), 409, "invalid_state")
        assert c.get("/api/audit/verify").json()["ok"] is True


def test_the_approver_is_the_token_never_the_body(live: Live) -> None:
    token = orch_of(live).create_principal("bob", "user")
    with live.client(token) as bob:
        sub = bob.post("/api/actions", json=HIGH).json()
        r = bob.post(f"/api/actions/{sub['action_id']}/approve",
                     json={"params_sha256": sub["params_sha256"], "approver": "admin"})
        assert_error(r, 422, "invalid_request")
        r = bob.post(f"/api/actions/{sub['action_id']}/approve",
                     json={"params_sha256": sub["params_sha256"]})
        assert r.status_code == 200 and r.json()["decided_by"] == "bob"


def test_a_user_cannot_approve_critical_or_read_the_audit(live: Live) -> None:
    token = orch_of(live).create_principal("carol", "user")
    with live.client() as admin, live.client(token) as carol:
        sub = carol.post("/api/actions", json={**HIGH, "min_level": "critical"}).json()
        assert sub["security_level"] == "critical" and sub["status"] == "pending"
        body = assert_error(carol.post(f"/api/actions/{sub['action_id']}/approve",
                                       json={"params_sha256": sub["params_sha256"]}),
                            403, "approval_refused")
        assert body["reason"] == "role"
        assert_error(carol.get("/api/audit-logs"), 403, "forbidden")
        assert_error(carol.get("/api/audit/verify"), 403, "forbidden")
        assert admin.post(f"/api/actions/{sub['action_id']}/approve",
                          json={"params_sha256": sub["params_sha256"]}).status_code == 200


@pytest.mark.parametrize("live", [{"require_distinct_approver": True}], indirect=True)
def test_self_approval_refused_when_configured(live: Live) -> None:
    with live.client() as c:
        sub = c.post("/api/actions", json=HIGH).json()
        body = assert_error(c.post(f"/api/actions/{sub['action_id']}/approve",
                                   json={"params_sha256": sub["params_sha256"]}),
                            409, "approval_refused")
        assert body["reason"] == "self_approval"


@pytest.mark.parametrize("live", [{"approval_ttl_s": 1.0}], indirect=True)
def test_expiry_through_the_api(live: Live) -> None:
    with live.client() as c:
        sub = c.post("/api/actions", json=HIGH).json()
        wait_for(lambda: c.get(f"/api/actions/{sub['action_id']}").json()["status"]
                 == "expired", "expiry", timeout=10)
        body = assert_error(c.post(f"/api/actions/{sub['action_id']}/approve",
                                   json={"params_sha256": sub["params_sha256"]}),
                            409, "approval_refused")
        assert body["reason"] == "expired"


def test_reject(live: Live) -> None:
    with live.client() as c:
        sub = c.post("/api/actions", json=HIGH).json()
        r = c.post(f"/api/actions/{sub['action_id']}/reject", json={"reason": "no"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        assert_error(c.post(f"/api/actions/{sub['action_id']}/reject"), 409, "invalid_state")


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI keeps those apart)."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif hasattr(r, "original_router"):
            out += _api_routes(r.original_router.routes)
    return out


def _routes(live: Live) -> list[tuple[str, str]]:
    out = []
    from closedpaw.api.guard import PUBLIC_PATHS

    for r in _api_routes(live.app.routes):
        if r.path not in PUBLIC_PATHS:   # the health probe; the web UI's login and pages
            path = r.path.replace("{action_id}", str(uuid.uuid4()))
            out += [(m, path) for m in sorted(r.methods)]
    return out


# every route x 3 bad headers is more than the per-address limit on failed authentications
# (a quarter of the per-principal rate): raise it so each refusal is a 401, not a 429
@pytest.mark.parametrize("live", [{"rate_limit_per_minute": 4000}], indirect=True)
def test_every_route_refuses_missing_and_wrong_tokens(live: Live) -> None:
    routes = _routes(live)
    assert len(routes) >= 10
    bad_headers: list[dict[str, str]] = [
        {}, {"Authorization": f"Bearer {new_token()}"}, {"Authorization": "Bearer"},
        {"Authorization": f"Basic {live.token}"}, {"Authorization": live.token},
        {"Authorization": f"Bearer {live.token}x"}]
    with httpx.Client(base_url=live.url, trust_env=False) as c:
        for method, path in routes:
            for h in bad_headers[:3] if method == "GET" else bad_headers[3:]:
                r = c.request(method, path, headers=h, json={"params_sha256": "a" * 64})
                assert_error(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/health").json() == {"status": "ok"}
        # the web UI's pages answer without a token, but only with the way to the login page
        for page in ("/", "/chat", "/approvals", "/audit", "/sandboxes", "/providers"):
            r = c.get(page, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] in ("/login", "/chat"), page
    # counted, not one fsync'd entry each: one summary per period, per source
    assert not [e for e in orch_of(live).audit.entries() if e.event.startswith("auth.failed")]
    write_summaries(live.app.state, 60.0)
    failures = [e for e in orch_of(live).audit.entries() if e.event == "auth.failed.summary"]
    assert len(failures) == 1 and failures[0].details["total"] == len(routes) * 3
    assert sum(failures[0].details["sources"]["127.0.0.1"].values()) == len(routes) * 3


@pytest.mark.parametrize("live", [{"rate_limit_per_minute": 5}], indirect=True)
def test_rate_limit_per_principal(live: Live) -> None:
    other = orch_of(live).create_principal("dave", "user")
    with live.client() as c, live.client(other) as d:
        codes = [c.get("/api/status").status_code for _ in range(5)]
        assert codes == [200] * 5
        r = c.get("/api/status")
        body = assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
        assert d.get("/api/actions/pending").status_code == 200   # others are not affected
    write_summaries(live.app.state, 60.0)
    hits = [e for e in orch_of(live).audit.entries() if e.event == "ratelimit.summary"]
    assert len(hits) == 1 and hits[0].details["sources"] == {"admin": {"/api/status": 1}}


@pytest.mark.parametrize("live", [{"rate_limit_per_minute": 40}], indirect=True)
def test_guessing_tokens_is_rate_limited(live: Live) -> None:
    with httpx.Client(base_url=live.url, trust_env=False) as c:
        codes = [c.get("/api/status", headers={"Authorization": f"Bearer {new_token()}"}
                       ).status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[-1] == 429


def test_errors_are_json_with_stable_codes(live: Live) -> None:
    with live.client() as c:
        assert_error(c.post("/api/actions", content=b"{not json",
                            headers={"content-type": "application/json"}), 422,
                     "invalid_request")
        assert_error(c.post("/api/actions", json={"action_type": "Bad Type!"}), 422,
                     "invalid_request")
        assert_error(c.post("/api/actions", json={**HIGH, "min_level": "lowest"}), 422,
                     "invalid_request")
        assert_error(c.get("/api/actions/not-a-uuid"), 404, "action_not_found")
        assert_error(c.get(f"/api/actions/{uuid.uuid4()}"), 404, "action_not_found")
        assert_error(c.get("/api/nowhere"), 404, "not_found")
        assert_error(c.delete("/api/actions/pending"), 405, "method_not_allowed")
        assert_error(c.get("/api/audit-logs?limit=0"), 422, "invalid_request")


def test_unparseable_parameters_are_accepted_as_high(live: Live) -> None:
    with live.client() as c:
        r = c.post("/api/actions", json={"action_type": "code_execution",
                                         "parameters": {"language": "cobol", "code": "x"}})
        assert r.status_code == 201
        assert r.json()["security_level"] == "high" and r.json()["status"] == "pending"


def test_no_cors(live: Live) -> None:
    with live.client() as c:
        pre = c.options("/api/actions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
        r = c.get("/api/status", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_audit_pages_and_status(live: Live) -> None:
    with live.client() as c:
        for _ in range(3):
            c.post("/api/actions", json=HIGH)
        p1 = c.get("/api/audit-logs", params={"limit": 2}).json()
        assert [e["seq"] for e in p1["entries"]] == [1, 2] and p1["next_after_seq"] == 2
        p2 = c.get("/api/audit-logs", params={"after_seq": 2, "limit": 100}).json()
        assert p2["entries"][0]["seq"] == 3 and p2["next_after_seq"] is None
        assert all(e["entry_hash"] and e["prev_hash"] for e in p2["entries"])
        st = c.get("/api/status").json()
        assert st["pending"] == 3 and st["sandbox"]["runtime"] == "fake"
        assert st["principal"] == {"name": "admin", "role": "admin"}


def test_events_stream_action_transitions(live: Live) -> None:
    seen: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with live.client() as c, c.stream("GET", "/api/events", timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["status"] == "completed":
                        return
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert connected.wait(10)
    with live.client() as c:
        aid = c.post("/api/actions", json={"action_type": "code_execution",
                                           "parameters": CODE}).json()["action_id"]
    t.join(20)
    assert not t.is_alive()
    assert [e["status"] for e in seen if e["action_id"] == aid] == \
        ["approved", "executing", "completed"]


def test_read_only_audit_store_refuses_actions(live: Live) -> None:
    audit_dir = str(live.settings.audit_dir)
    with live.client() as c:
        subprocess.run(["mount", "--bind", audit_dir, audit_dir], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", audit_dir], check=True)
            r = c.post("/api/actions", json={"action_type": "chat",
                                             "parameters": {"message": "hi"}})
            assert_error(r, 503, "audit_unavailable")
        finally:
            subprocess.run(["umount", audit_dir], check=True)
        assert c.get("/api/actions").json()["actions"] == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com", "10.0.0.1"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    check_host(host, allow_remote=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    check_host(host, allow_remote=False)


def test_serve_refuses_a_public_address(tmp_path: Path) -> None:
    cli = str(Path(sys.executable).with_name("closedpaw"))
    r = subprocess.run([cli, "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--allow-remote" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("setup", "env", "message"), [
    ("rules: [", {}, "not valid YAML"),
    ("version: 1\nrules:\n  - {action_type: chat, level: lowest}\n", {}, "level"),
    ("", {"CLOSEDPAW_DB_URL": "mysql://x@localhost/db"}, "not supported"),
    ("", {"CLOSEDPAW_DB_URL": "postgresql+psycopg://u@/x?host=/nonexistent"}, "unreachable"),
])
def test_serve_fails_closed_with_one_line(tmp_path: Path, setup: str, env: dict[str, str],
                                          message: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if setup:
        (data / "rules.yaml").write_text(setup)
    cli = str(Path(sys.executable).with_name("closedpaw"))
    r = subprocess.run([cli, "serve", "--port", "1", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=60, check=False,
                       env={"PATH": "/usr/bin:/bin", **env})
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_an_approved_network_request_reaches_a_loopback_server(live: Live) -> None:
    with live.client() as c:
        sub = c.post("/api/actions", json={"action_type": "network_request", "parameters": {
            "url": f"{live.url}/api/health"}}).json()
        assert sub["security_level"] == "high" and sub["status"] == "pending"
        c.post(f"/api/actions/{sub['action_id']}/approve",
               json={"params_sha256": sub["params_sha256"]}).raise_for_status()
        a = finished(c, sub["action_id"])
        assert a["status"] == "completed", a
        assert a["result"]["status_code"] == 200
        assert json.loads(a["result"]["body"]) == {"status": "ok"}


def test_the_schema_needs_a_token_too(live: Live) -> None:
    with httpx.Client(base_url=live.url, trust_env=False) as anon, live.client() as c:
        assert_error(anon.get("/openapi.json"), 401, "unauthorized")
        assert_error(anon.get("/docs"), 401, "unauthorized")
        assert c.get("/docs").status_code == 404
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/api/actions", "/api/actions/{action_id}/approve", "/api/audit-logs",
                "/api/audit/verify", "/api/status", "/api/events"} <= set(paths)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"action_type":"chat","parameters":{"message":"\\ud800"}}', 422, "invalid_request"),
    (b'{"action_type":"zzz","parameters":{"x":"\\udfff"}}', 422, "invalid_request"),
    (b'{"action_type":"zzz","parameters":{"x":NaN}}', 422, "invalid_request"),
    (b'{"action_type":"zzz","parameters":{"x":' + b"[" * 100 + b"]" * 100 + b"}}", 422,
     "invalid_request"),
    (b'{"action_type":"zzz","parameters":{"x":' + b"[" * 50000 + b"]" * 50000 + b"}}", 400,
     "bad_request"),
    (b'{"action_type":"zzz","parameters":{"x":' + b"9" * 5000 + b"}}", 400, "bad_request"),
    (b'{"action_type":"zzz","parameters":{"x":"' + b"a" * (9 * 1024 * 1024) + b'"}}', 413,
     "too_large"),
])
def test_hostile_bodies_get_clear_errors(live: Live, body: bytes, status: int,
                                         code: str) -> None:
    with live.client() as c:
        r = c.post("/api/actions", content=body, headers={"content-type": "application/json"})
        assert_error(r, status, code)
        assert c.get("/api/actions").json()["actions"] == []


def test_an_undeclared_oversized_body_is_cut_off(live: Live) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"action_type":"zzz","parameters":{"x":"'
        for _ in range(10):
            yield b"a" * 1024 * 1024
        yield b'"}}'
    with live.client() as c:
        r = c.post("/api/actions", content=chunks(),
                   headers={"content-type": "application/json"})
        assert r.status_code in (400, 413) and r.json()["error"]["code"] in (
            "bad_request", "too_large")
        assert c.get("/api/health").status_code == 200


def test_the_api_on_each_database(db_url: str, tmp_path: Path) -> None:
    """The same server, on SQLite and on the throwaway PostgreSQL: submit, approve, restart,
    and the history is still there."""
    s = gate_settings(tmp_path, db_url=db_url)
    for round_ in range(2):
        orch = Gate(s, manager=fake_manager(s, python_handler))
        try:
            with live_server(s, orch) as lv, lv.client() as c:
                if round_ == 0:
                    sub = c.post("/api/actions", json=HIGH).json()
                    c.post(f"/api/actions/{sub['action_id']}/approve",
                           json={"params_sha256": sub["params_sha256"]}).raise_for_status()
                    assert finished(c, sub["action_id"])["result"]["stdout"] == "42\n"
                else:
                    acts = c.get("/api/actions").json()["actions"]
                    assert [a["status"] for a in acts] == ["completed"]
                    assert c.get("/api/audit/verify").json()["ok"] is True
                    assert c.get("/api/status").json()["database"].startswith(
                        db_url.split(":")[0])
        finally:
            orch.close()
