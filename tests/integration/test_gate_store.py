"""The gate on a real database: SQLite (WAL) and a real PostgreSQL server.

Approval binding (hash, replay, expiry, role, self-approval), critical never automatic,
unknown -> high, restart durability, crash recovery, fail closed on audit failure."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from closedpaw.errors import ActionStateError, ApprovalRefused, AuditWriteError, InvalidRequest
from closedpaw.gate import ActionRequest, ActionStatus, Gate
from closedpaw.security import Principal
from tests.integration.conftest import fake_manager, gate_settings, wait_for

ADMIN = Principal("root-admin", "admin")
ALICE = Principal("alice", "user")
BOB = Principal("bob", "user")
CAROL = Principal("carol", "approver")   # may decide on another principal's high action
CODE = {"language": "python", "code": "print(6*7)"}

MakeOrch = Callable[..., Gate]


def high_code(o: Gate, who: Principal = ALICE) -> str:
    rec = o.submit(who, ActionRequest(action_type="code_execution", parameters=CODE,
                                      min_level="high"))  # type: ignore[arg-type]
    assert rec.status is ActionStatus.PENDING and rec.requires_approval
    return rec.id


def done(o: Gate, aid: str) -> ActionStatus:
    return wait_for(lambda: o.get(aid).status if o.get(aid).status.final else None,
                    f"action {aid} to finish")  # type: ignore[no-any-return]


def events(o: Gate, aid: str) -> list[str]:
    return [e.event for e in o.audit.entries() if e.action_id == aid]


def test_low_and_medium_run_at_once_and_are_audited(make_orch: MakeOrch, db_url: str,
                                                    tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
    assert str(rec.security_level) == "medium" and not rec.requires_approval
    assert done(o, rec.id) is ActionStatus.COMPLETED
    got = o.get(rec.id)
    assert got.result is not None and got.result["stdout"] == "42\n"
    assert got.result["exit_code"] == 0 and got.result["isolation"]["runtime"] == "fake"
    assert events(o, rec.id) == ["action.submitted", "action.approved", "action.executing",
                                 "sandbox.run", "action.completed"]
    run = next(e for e in o.audit.entries() if e.event == "sandbox.run")
    assert run.details["isolation"]["network"] == "none"
    assert o.audit.verify().ok


def test_a_rule_approved_action_starts_in_its_submissions_write(make_orch: MakeOrch,
                                                                 db_url: str,
                                                                 tmp_path: Path) -> None:
    """With a free execution slot, the submission records the start too (one durable write,
    one commit): it is executing when submit() returns, and listeners still hear approved
    before executing."""
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    heard: list[tuple[str, str]] = []
    off = o.subscribe(lambda ev: heard.append((ev["action_id"], ev["status"])))
    try:
        rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
        assert rec.status is ActionStatus.EXECUTING
        assert done(o, rec.id) is ActionStatus.COMPLETED
    finally:
        off()
    assert [st for aid, st in heard if aid == rec.id] == ["approved", "executing", "completed"]
    entries = [e for e in o.audit.entries() if e.action_id == rec.id]
    assert [e.event for e in entries[:3]] == ["action.submitted", "action.approved",
                                              "action.executing"]
    assert [e.seq for e in entries[:3]] == [entries[0].seq + i for i in range(3)]
    assert o.audit.verify().ok


def test_a_refused_submission_gives_its_execution_slot_back(make_orch: MakeOrch, db_url: str,
                                                            tmp_path: Path) -> None:
    """Attack: a principal with one execution slot sends submissions the quota refuses. Had
    each kept the slot it took, the principal's next real action would wait forever."""
    from closedpaw.errors import QuotaExceeded

    o = make_orch(gate_settings(tmp_path, db_url=db_url, max_executions_per_principal=1,
                                max_pending_bytes_per_principal=400))
    big = {"language": "python", "code": "#" + "x" * 600}
    for _ in range(5):
        with pytest.raises(QuotaExceeded):
            o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=big))
    assert o.queue_status()["running"] == {}
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
    assert rec.status is ActionStatus.EXECUTING
    assert done(o, rec.id) is ActionStatus.COMPLETED
    assert o.queue_status()["running"] == {}


def test_wait_hands_over_the_final_record(make_orch: MakeOrch, db_url: str,
                                          tmp_path: Path) -> None:
    """Gate.wait: the record its own end committed, an action final already, a timeout
    answering the action as it is, a principal who may not see it; no waiter left behind."""
    from closedpaw.errors import ActionNotFound

    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
    got = o.wait(rec.id, 60)
    assert got.status is ActionStatus.COMPLETED and got.result is not None
    assert got.result["stdout"] == "42\n" and got == o.get(rec.id)
    assert o.wait(rec.id, 60) == got                     # final already: at once
    aid = high_code(o)
    t0 = time.monotonic()
    assert o.wait(aid, 0.2).status is ActionStatus.PENDING   # nobody decided: as it is
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(ActionNotFound):
        o.wait(aid, 0.1, BOB)
    o.reject(ADMIN, aid, "no")
    assert o.wait(aid, 60).status is ActionStatus.REJECTED
    assert o._waiters == {}


def test_wait_reads_nothing_for_an_action_it_runs(make_orch: MakeOrch, db_url: str,
                                                   tmp_path: Path) -> None:
    """The action ran by this gate: its end hands the record over; no SELECT of it."""
    from sqlalchemy import event

    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    reads: list[str] = []

    def seen(_c: object, _cur: object, sql: str, *_a: object) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "actions" in sql:
            reads.append(sql)
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
    event.listen(o.store.engine, "before_cursor_execute", seen)
    try:
        got = o.wait(rec.id, 60)
    finally:
        event.remove(o.store.engine, "before_cursor_execute", seen)
    assert got.status is ActionStatus.COMPLETED and reads == []
    assert o._inflight == set() and o._waiters == {}


def test_wait_wakes_when_a_job_finds_its_action_changed(make_orch: MakeOrch, db_url: str,
                                                        tmp_path: Path) -> None:
    """An approved action queued here is interrupted by another gate's start meanwhile: its
    job here runs nothing and publishes no end; its waiter is woken and reads it."""
    release = threading.Event()

    def slow(argv: object, stdin: bytes) -> tuple[int, bytes, bytes]:
        release.wait(60)
        return 0, b"", b""
    s = gate_settings(tmp_path, db_url=db_url, max_executions_per_principal=1)
    o1 = make_orch(s, manager=fake_manager(s, slow))
    first = o1.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE))
    assert first.status is ActionStatus.EXECUTING   # holds ALICE's one slot
    aid = high_code(o1)
    o1.approve(ADMIN, aid, o1.get(aid).params_sha256)
    assert o1.get(aid).status is ActionStatus.APPROVED    # queued behind the first
    make_orch(s)    # another gate starts: it interrupts what no gate runs any more
    assert o1.get(aid).status is ActionStatus.INTERRUPTED
    got: list[ActionStatus] = []
    t = threading.Thread(target=lambda: got.append(o1.wait(aid, 120).status))
    t.start()
    t0 = time.monotonic()
    release.set()
    t.join(100)
    assert got == [ActionStatus.INTERRUPTED] and time.monotonic() - t0 < 90
    assert aid not in o1._inflight and aid not in o1._waiters


def test_a_note_is_audited_in_the_submissions_own_write(make_orch: MakeOrch, db_url: str,
                                                         tmp_path: Path) -> None:
    """The assistant's record of a tool call goes with the submission (one durable write):
    on record before the action runs, whatever its level."""
    from closedpaw.audit import AuditEvent

    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    note = (AuditEvent.ASSISTANT_TOOL_CALL, {"conversation_id": "c1",
                                             "requested_by": "assistant"})
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE),
                   note=note)
    assert done(o, rec.id) is ActionStatus.COMPLETED
    assert events(o, rec.id) == ["action.submitted", "action.approved", "assistant.tool_call",
                                 "action.executing", "sandbox.run", "action.completed"]
    entries = [e for e in o.audit.entries() if e.action_id == rec.id]
    assert [e.seq for e in entries[:3]] == [entries[0].seq + i for i in range(3)]
    tc = entries[2]
    assert tc.principal == "alice" and tc.details == {
        "conversation_id": "c1", "requested_by": "assistant",
        "params_sha256": rec.params_sha256}
    high = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE,
                                         min_level="high"), note=note)  # type: ignore[arg-type]
    assert high.status is ActionStatus.PENDING
    assert events(o, high.id) == ["action.submitted", "assistant.tool_call"]
    assert o.audit.verify().ok


def test_approval_must_carry_the_reviewed_hash(make_orch: MakeOrch, db_url: str,
                                               tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    aid = high_code(o)
    rec = o.get(aid)
    for wrong in ("0" * 64, rec.params_sha256[:-1] + "0", "", "not-a-hash"):
        with pytest.raises(ApprovalRefused) as e:
            o.approve(ADMIN, aid, wrong)
        assert e.value.reason == "hash_mismatch"
    assert o.get(aid).status is ActionStatus.PENDING
    out = o.approve(ADMIN, aid, rec.params_sha256)
    assert out.decided_by == ADMIN.name
    assert done(o, aid) is ActionStatus.COMPLETED
    refused = [e for e in o.audit.entries() if e.event == "approval.refused"]
    assert len(refused) == 4 and all(e.details["reason"] == "hash_mismatch" for e in refused)


def test_an_approval_is_used_once(make_orch: MakeOrch, db_url: str, tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    aid = high_code(o)
    sha = o.get(aid).params_sha256
    o.approve(ADMIN, aid, sha)
    with pytest.raises(ActionStateError, match="used once"):
        o.approve(ADMIN, aid, sha)
    assert done(o, aid) is ActionStatus.COMPLETED
    with pytest.raises(ActionStateError):
        o.approve(ADMIN, aid, sha)
    assert events(o, aid).count("action.executing") == 1


def test_concurrent_approvals_only_one_wins(make_orch: MakeOrch, db_url: str,
                                            tmp_path: Path) -> None:
    s = gate_settings(tmp_path, db_url=db_url)
    o1 = make_orch(s)
    o2 = make_orch(s, start=False)   # a second process on the same database
    aid = high_code(o1)
    sha = o1.get(aid).params_sha256
    wins: list[str] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    def go(o: Gate, who: Principal) -> None:
        barrier.wait()
        try:
            o.approve(who, aid, sha)
            wins.append(who.name)
        except (ActionStateError, ApprovalRefused) as e:
            errors.append(e)
    threads = [threading.Thread(target=go, args=((o1, o2)[i % 2], Principal(f"p{i}", "approver")))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1, (wins, errors)
    assert done(o1, aid) is ActionStatus.COMPLETED
    assert events(o1, aid).count("action.approved") == 1
    assert o1.audit.verify().ok


def test_pending_actions_expire_at_their_ttl(make_orch: MakeOrch, db_url: str,
                                             tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url, approval_ttl_s=1.0))
    aid = high_code(o)
    sha = o.get(aid).params_sha256
    time.sleep(1.2)
    with pytest.raises(ApprovalRefused) as e:
        o.approve(ADMIN, aid, sha)
    assert e.value.reason == "expired"
    assert o.get(aid).status is ActionStatus.EXPIRED
    assert "action.expired" in events(o, aid)
    assert "action.executing" not in events(o, aid)


def test_critical_needs_an_admin(make_orch: MakeOrch, db_url: str, tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    rec = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE,
                                        min_level="critical"))  # type: ignore[arg-type]
    assert str(rec.security_level) == "critical" and rec.status is ActionStatus.PENDING
    for who in (ALICE, CAROL):   # the requester, and an approver: neither is an admin
        with pytest.raises(ApprovalRefused) as e:
            o.approve(who, rec.id, rec.params_sha256)
        assert e.value.reason == "role"
    o.approve(ADMIN, rec.id, rec.params_sha256)
    assert done(o, rec.id) is ActionStatus.COMPLETED


def test_critical_is_never_automatic(make_orch: MakeOrch, db_url: str, tmp_path: Path) -> None:
    s = gate_settings(tmp_path, db_url=db_url)
    s.data_dir.mkdir(parents=True)
    s.rules_path.write_text("version: 1\nrules:\n  - {action_type: file_write, level: low}\n")
    o = make_orch(s)
    plain = o.submit(ALICE, ActionRequest(action_type="file_write", parameters={
        "path": str(tmp_path / "x.txt"), "content": "hi"}))
    assert str(plain.security_level) == "low"     # the user's rule applies...
    assert done(o, plain.id) is ActionStatus.COMPLETED
    assert (tmp_path / "x.txt").read_text() == "hi"
    for target in (s.rules_path, s.token_file, s.audit_dir / "audit.key"):
        rec = o.submit(ADMIN, ActionRequest(action_type="file_write", parameters={
            "path": str(target), "content": "version: 1\nrules: []\n"}))
        assert str(rec.security_level) == "critical", target   # ...but never to these
        assert rec.status is ActionStatus.PENDING
    time.sleep(0.3)
    assert s.rules_path.read_text().startswith("version: 1\nrules:\n  - ")


def test_self_approval_can_be_forbidden(make_orch: MakeOrch, db_url: str,
                                        tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url, require_distinct_approver=True))
    aid = high_code(o, ALICE)
    sha = o.get(aid).params_sha256
    with pytest.raises(ApprovalRefused) as e:
        o.approve(ALICE, aid, sha)
    assert e.value.reason == "self_approval"
    o.approve(CAROL, aid, sha)
    assert done(o, aid) is ActionStatus.COMPLETED


def test_self_approval_is_allowed_by_default(make_orch: MakeOrch, db_url: str,
                                             tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    aid = high_code(o, ALICE)
    o.approve(ALICE, aid, o.get(aid).params_sha256)
    assert done(o, aid) is ActionStatus.COMPLETED


def test_unknown_types_are_high_and_never_run(make_orch: MakeOrch, db_url: str,
                                              tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    rec = o.submit(ALICE, ActionRequest(action_type="format_disk", parameters={"dev": "sda"}))
    assert str(rec.security_level) == "high" and rec.status is ActionStatus.PENDING
    assert "unknown action type" in rec.level_reason
    o.approve(ADMIN, rec.id, rec.params_sha256)
    assert done(o, rec.id) is ActionStatus.FAILED
    assert "cannot execute" in (o.get(rec.id).error or "")


def test_rejected_actions_never_run(make_orch: MakeOrch, db_url: str, tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    aid = high_code(o)
    o.reject(CAROL, aid, "not today")
    assert o.get(aid).status is ActionStatus.REJECTED
    with pytest.raises(ActionStateError):
        o.approve(ADMIN, aid, o.get(aid).params_sha256)
    assert events(o, aid) == ["action.submitted", "action.rejected", "approval.refused"]


def test_pending_and_history_survive_a_restart(make_orch: MakeOrch, db_url: str,
                                               tmp_path: Path) -> None:
    s = gate_settings(tmp_path, db_url=db_url)
    o = make_orch(s)
    pending = high_code(o)
    finished = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE)).id
    done(o, finished)
    o.close()
    o2 = make_orch(s)
    assert [r.id for r in o2.pending()] == [pending]
    assert o2.get(finished).status is ActionStatus.COMPLETED
    assert o2.get(finished).result["stdout"] == "42\n"  # type: ignore[index]
    o2.approve(ADMIN, pending, o2.get(pending).params_sha256)
    assert done(o2, pending) is ActionStatus.COMPLETED
    assert o2.audit.verify().ok


def test_work_cut_off_by_a_crash_becomes_interrupted(make_orch: MakeOrch, db_url: str,
                                                     tmp_path: Path) -> None:
    s = gate_settings(tmp_path, db_url=db_url)
    release = threading.Event()
    started = threading.Event()

    def slow(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        started.set()
        release.wait(30)
        return 0, b"late\n", b""
    o = make_orch(s, manager=fake_manager(s, slow))
    aid = o.submit(ALICE, ActionRequest(action_type="code_execution", parameters=CODE)).id
    assert started.wait(10)
    assert o.get(aid).status is ActionStatus.EXECUTING
    # the process "dies"; a new one starts on the same data
    o2 = make_orch(s, start=False)
    assert o2.start() == [aid]
    assert o2.get(aid).status is ActionStatus.INTERRUPTED
    release.set()
    time.sleep(0.3)
    # the dead process's late result cannot overwrite the recorded interruption
    assert o2.get(aid).status is ActionStatus.INTERRUPTED
    assert "action.interrupted" in events(o2, aid)
    assert o2.audit.verify().ok


def test_no_audit_no_action(make_orch: MakeOrch, db_url: str, tmp_path: Path) -> None:
    """Fail closed: when the audit store becomes read-only, nothing is accepted or decided."""
    s = gate_settings(tmp_path, db_url=db_url)
    o = make_orch(s)
    aid = high_code(o)
    sha = o.get(aid).params_sha256
    audit_dir = str(s.audit_dir)
    subprocess.run(["mount", "--bind", audit_dir, audit_dir], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", audit_dir], check=True)
        with pytest.raises(AuditWriteError):
            o.submit(ALICE, ActionRequest(action_type="chat", parameters={"message": "hi"}))
        with pytest.raises(AuditWriteError):
            o.approve(ADMIN, aid, sha)
        assert len(o.list_actions()) == 1
        assert o.get(aid).status is ActionStatus.PENDING
    finally:
        subprocess.run(["umount", audit_dir], check=True)
    o.approve(ADMIN, aid, sha)
    assert done(o, aid) is ActionStatus.COMPLETED
    assert o.audit.verify().ok


def test_workspace_reads_are_confined_to_the_workspace(make_orch: MakeOrch,
                                                       tmp_path: Path) -> None:
    """A medium-risk read of a workspace path that leads out of the workspace (a symlink)
    fails at execution; the same path submitted as high and approved by a human works."""
    o = make_orch()
    ws = o.settings.workspace_path
    (ws / "notes.txt").write_text("inside")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (ws / "link.txt").symlink_to(secret)
    (ws / "dirlink").symlink_to(tmp_path)
    ok = o.submit(ALICE, ActionRequest(action_type="file_read",
                                       parameters={"path": str(ws / "notes.txt")}))
    assert str(ok.security_level) == "medium" and done(o, ok.id) is ActionStatus.COMPLETED
    assert o.get(ok.id).result["content"] == "inside"  # type: ignore[index]
    for path in (ws / "link.txt", ws / "dirlink" / "secret.txt"):
        bad = o.submit(ALICE, ActionRequest(action_type="file_read",
                                            parameters={"path": str(path)}))
        assert str(bad.security_level) == "medium"
        assert done(o, bad.id) is ActionStatus.FAILED
        assert "outside the workspace" in (o.get(bad.id).error or "")
        assert o.get(bad.id).result is None
    out = o.submit(ALICE, ActionRequest(action_type="file_read",
                                        parameters={"path": str(secret)}))
    assert out.status is ActionStatus.PENDING and str(out.security_level) == "high"
    o.approve(ADMIN, out.id, out.params_sha256)
    assert done(o, out.id) is ActionStatus.COMPLETED
    assert o.get(out.id).result["content"] == "outside"  # type: ignore[index]


def test_file_write_does_not_follow_a_final_symlink(make_orch: MakeOrch,
                                                    tmp_path: Path) -> None:
    o = make_orch()
    target = tmp_path / "target.txt"
    target.write_text("original")
    (tmp_path / "link.txt").symlink_to(target)
    rec = o.submit(ALICE, ActionRequest(action_type="file_write", parameters={
        "path": str(tmp_path / "link.txt"), "content": "pwned"}))
    o.approve(ADMIN, rec.id, rec.params_sha256)
    assert done(o, rec.id) is ActionStatus.FAILED
    assert target.read_text() == "original"


def test_code_runs_under_its_named_policy(make_orch: MakeOrch, db_url: str,
                                          tmp_path: Path) -> None:
    """The policy's limits reach the sandbox (timeout replaced by the action's); an unknown
    policy is refused at submission with a message naming it; built-in policies are medium."""
    o = make_orch(gate_settings(tmp_path, db_url=db_url))
    rec = o.submit(ALICE, ActionRequest(
        action_type="code_execution",
        parameters={**CODE, "policy": "default", "timeout_s": 5}))  # type: ignore[arg-type]
    assert done(o, rec.id) is ActionStatus.COMPLETED
    result = o.get(rec.id).result
    assert result is not None
    want = o.sandbox_manager().spec_for("default").limits.memory_mb
    assert result["isolation"]["memory_limit_mb"] == want
    before = len(o.audit.entries())
    with pytest.raises(InvalidRequest, match="no-such-policy"):
        o.submit(ALICE, ActionRequest(
            action_type="code_execution",
            parameters={**CODE, "policy": "no-such-policy"}))  # type: ignore[arg-type]
    assert len(o.audit.entries()) == before  # nothing was stored or run
    py = o.submit(ALICE, ActionRequest(action_type="code_execution",
                                       parameters={**CODE, "policy": "python"}))  # type: ignore[arg-type]
    assert str(py.security_level) == "medium"


@pytest.mark.parametrize(("action_type", "parameters", "why"), [
    ("chat", {"message": "hi"}, "no LLM provider is configured"),
    ("secret_read", {"name": "github"}, "no vault is initialized (run 'closedpaw vault init')"),
])
def test_types_without_their_service_fail_clearly_and_never_run(
        make_orch: MakeOrch, tmp_path: Path, action_type: str, parameters: dict[str, object],
        why: str) -> None:
    o = make_orch(gate_settings(tmp_path))
    rec = o.submit(ALICE, ActionRequest(action_type=action_type, parameters=parameters))
    if rec.status is ActionStatus.PENDING:
        o.approve(ADMIN, rec.id, rec.params_sha256)
    assert done(o, rec.id) is ActionStatus.FAILED
    assert o.get(rec.id).error == f"cannot execute {action_type}: {why}"
    assert "sandbox.run" not in events(o, rec.id)


def test_an_action_type_without_an_executor_is_a_registry_miss(make_orch: MakeOrch,
                                                                tmp_path: Path) -> None:
    """The gate runs only what its registry knows: a valid, approved file_write with no
    executor registered fails with no_executor and writes nothing."""
    from closedpaw.gate.executors import ExecutorRegistry, default_registry

    reg = ExecutorRegistry()
    for action_type, fn in default_registry().items():
        if action_type != "file_write":
            reg.register(action_type, fn)
    s = gate_settings(tmp_path)
    o = Gate(s, manager=fake_manager(s), executors=reg)
    try:
        o.start()
        target = tmp_path / "never-written"
        rec = o.submit(ALICE, ActionRequest(action_type="file_write",
                                            parameters={"path": str(target), "content": "x"}))
        o.approve(ADMIN, rec.id, rec.params_sha256)
        assert done(o, rec.id) is ActionStatus.FAILED
        assert o.get(rec.id).error == ("cannot execute 'file_write': no executor is registered "
                                       "for this action type")
        assert not target.exists()
    finally:
        o.close()
    with pytest.raises(ValueError, match="registered already"):
        reg.register("chat", reg["chat"])
