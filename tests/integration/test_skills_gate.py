"""Skills through the gate: installing is high and shows the declared capabilities; a run's
level derives from them; the filesystem skill audits every operation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import ApprovalRefused, InvalidRequest
from closedpaw.gate import ActionRequest, ActionStatus, Gate
from closedpaw.sandbox import SandboxManager
from closedpaw.security import Principal
from tests.integration.conftest import gate_settings, wait_for
from tests.skills.support import write_skill

ADMIN = Principal("admin", "admin")
USER = Principal("user", "user")
MakeOrch = Callable[..., Gate]


def skill(name: str, arguments: dict[str, Any], install: bool = False) -> ActionRequest:
    return ActionRequest(action_type="skill_execution",
                         parameters={"skill": name, "arguments": arguments,
                                     "install": install})


def done(o: Gate, aid: str) -> Any:
    return wait_for(lambda: (r := o.get(aid)).status.final and r, f"action {aid} to finish")


def test_install_is_high_shows_capabilities_and_runs_after_approval(
        make_orch: MakeOrch, mgr: SandboxManager, tmp_path: Path) -> None:
    data = tmp_path / "data-dir"
    data.mkdir()
    os.chmod(data, 0o777)
    o = make_orch(gate_settings(tmp_path), manager=mgr)
    svc = o.context.skills
    assert svc is not None
    pkg = write_skill(tmp_path / "pkgs", code="import sys, json; a = json.load(sys.stdin); "
                      "open('/out/r.txt', 'w').write(a['text'].upper()); print('ok')",
                      caps={"paths": [{"host": str(data), "mount": "/out", "mode": "rw"}]})
    req = svc.install_request(pkg)
    rec = o.submit(USER, skill("probe", req["arguments"], install=True))
    assert rec.status is ActionStatus.PENDING and str(rec.security_level) == "high"
    shown = json.loads(rec.canonical)["parameters"]["arguments"]
    assert shown["capabilities"]["paths"] == [{"host": str(data), "mount": "/out",
                                               "mode": "rw"}]
    assert shown["tree_sha256"] == req["arguments"]["tree_sha256"]
    # a request hiding the rw path from the approver is refused at once
    lying = dict(req["arguments"], capabilities={**shown["capabilities"], "paths": []})
    with pytest.raises(InvalidRequest, match=r"exactly what the package declares"):
        o.submit(USER, skill("probe", lying, install=True))
    o.approve(ADMIN, rec.id, rec.params_sha256)
    assert done(o, rec.id).status is ActionStatus.COMPLETED
    assert svc.store.names() == ["probe"]
    events = [e.event for e in o.audit.entries()]
    assert "skill.installed" in events
    # a run of a skill with a rw path is high; approved, it writes only there
    run = o.submit(USER, skill("probe", {"text": "hi"}))
    assert str(run.security_level) == "high" and "writable" in run.level_reason
    o.approve(ADMIN, run.id, run.params_sha256)
    r = done(o, run.id)
    assert r.status is ActionStatus.COMPLETED, r.error
    assert r.result["stdout"] == "ok\n" and (data / "r.txt").read_text() == "HI"
    assert r.result["skill"]["sha256"] == req["arguments"]["tree_sha256"]


def test_a_skill_without_capabilities_is_medium_and_runs_at_once(
        make_orch: MakeOrch, mgr: SandboxManager, tmp_path: Path) -> None:
    o = make_orch(gate_settings(tmp_path), manager=mgr)
    svc = o.context.skills
    assert svc is not None
    req = svc.install_request(write_skill(tmp_path / "pkgs", code="print(6*7)"))
    svc.install(req["skill"], req["arguments"])
    rec = o.submit(USER, skill("probe", {}))
    assert str(rec.security_level) == "medium"
    r = done(o, rec.id)
    assert r.status is ActionStatus.COMPLETED and r.result["stdout"] == "42\n"
    with pytest.raises(InvalidRequest, match=r"no skill 'nope'"):
        o.submit(USER, skill("nope", {}))


def test_a_secret_skill_fails_closed_without_a_vault(make_orch: MakeOrch,
                                                     tmp_path: Path) -> None:
    o = make_orch()
    svc = o.context.skills
    assert svc is not None
    req = svc.install_request(write_skill(tmp_path / "pkgs", caps={"secrets": ["TOKEN"]}))
    svc.install(req["skill"], req["arguments"])
    rec = o.submit(USER, skill("probe", {}))
    assert str(rec.security_level) == "high"
    o.approve(ADMIN, rec.id, rec.params_sha256)
    r = done(o, rec.id)
    assert r.status is ActionStatus.FAILED and "the vault is locked" in (r.error or "")


def test_filesystem_skill_levels_and_audit(make_orch: MakeOrch, tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes").write_text("remember the milk")
    o = make_orch(fs_roots=str(root))
    rec = o.submit(USER, skill("filesystem", {"op": "read", "path": f"{root}/notes"}))
    assert str(rec.security_level) == "medium"
    r = done(o, rec.id)
    assert r.status is ActionStatus.COMPLETED and r.result["content"] == "remember the milk"
    bad = o.submit(USER, skill("filesystem", {"op": "read", "path": "/etc/shadow"}))
    assert done(o, bad.id).status is ActionStatus.FAILED
    w = o.submit(USER, skill("filesystem", {"op": "write", "path": f"{root}/x",
                                            "content": "y"}))
    assert w.status is ActionStatus.PENDING and str(w.security_level) == "high"
    # it writes a host file as the server (no sandbox): its user cannot approve it
    with pytest.raises(ApprovalRefused, match="approver or admin"):
        o.approve(USER, w.id, w.params_sha256)
    assert o.get(w.id).status is ActionStatus.PENDING and not (root / "x").exists()
    o.approve(Principal("bob", "approver"), w.id, w.params_sha256)
    assert done(o, w.id).status is ActionStatus.COMPLETED and (root / "x").read_text() == "y"
    with pytest.raises(InvalidRequest, match=r"arguments.op"):
        o.submit(USER, skill("filesystem", {"op": "rm", "path": str(root)}))
    file_events = [e for e in o.audit.entries() if e.event == "skill.file"]
    assert [(e.details["op"], e.details["outcome"], e.action_id) for e in file_events] == [
        ("read", "ok", rec.id), ("read", "refused", bad.id), ("write", "ok", w.id)]
    assert o.audit.verify().ok


def test_a_skill_echoing_guesses_is_no_oracle_and_the_filesystem_skill_is_redacted(
        make_orch: MakeOrch, mgr: SandboxManager, tmp_path: Path) -> None:
    """An installed skill with a host path that echoes its arguments: a user's guesses of an
    admin's PIN come back as written (redacting every stored value there would single out
    the right one). The built-in filesystem skill reads host files on its own: what it
    returns is redacted of every value."""
    shown = tmp_path / "shown"
    shown.mkdir()
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "conf").write_text("pin=604215\n")
    o = make_orch(gate_settings(tmp_path, fs_roots=str(roots)), manager=mgr)
    o.vault.init_passphrase("a passphrase long enough")
    o.vault.set("ADMIN_PIN", "604215", "admin")
    svc = o.context.skills
    assert svc is not None
    req = svc.install_request(write_skill(
        tmp_path / "pkgs", code="import sys, json; print(*json.load(sys.stdin)['g'])",
        caps={"paths": [{"host": str(shown), "mount": "/shown", "mode": "ro"}]}))
    svc.install(req["skill"], req["arguments"])
    guesses = [str(n) for n in range(604200, 604230)]
    run = o.submit(USER, skill("probe", {"g": guesses}))
    o.approve(ADMIN, run.id, run.params_sha256)
    r = done(o, run.id)
    assert r.status is ActionStatus.COMPLETED, r.error
    assert r.result["stdout"].split() == guesses
    read = o.submit(USER, skill("filesystem", {"op": "read", "path": f"{roots}/conf"}))
    got = done(o, read.id)
    assert got.status is ActionStatus.COMPLETED, got.error
    assert got.result["content"] == "pin=[secret:ADMIN_PIN]\n"
