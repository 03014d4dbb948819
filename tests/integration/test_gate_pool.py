"""The gate's code_execution on warm pools, on real runc and runsc: each action gets a sandbox
nobody had before, nothing of one action reaches the next, the pool is closed with the gate and
nothing is left behind."""

from __future__ import annotations

from pathlib import Path

from closedpaw.gate import ActionRequest, ActionStatus, Gate
from closedpaw.security import Principal
from tests.conftest import settled_leftovers
from tests.integration.conftest import gate_settings, wait_for

ALICE = Principal("alice", "user")
# the first action leaves a mark in /tmp; every later one must not find it
PROBE = ("import os\nseen = os.path.exists('/tmp/mark')\nopen('/tmp/mark', 'w').write('x')\n"
         "print('seen' if seen else 'fresh', 6*7)")


def _run(g: Gate, code: str, timeout_s: float = 60.0) -> dict[str, object]:
    rec = g.submit(ALICE, ActionRequest(action_type="code_execution", parameters={
        "language": "python", "code": code, "timeout_s": timeout_s}))
    wait_for(lambda: g.get(rec.id).status.final, f"action {rec.id} to finish", 120)
    done = g.get(rec.id)
    assert done.status is ActionStatus.COMPLETED, done.error
    assert done.result is not None
    return done.result


def test_each_action_takes_a_fresh_warm_sandbox_and_the_pool_closes_with_the_gate(
        tmp_path: Path, runtime: str) -> None:
    g = Gate(gate_settings(tmp_path, runtime=runtime, pool_size=1, code_pool=True))
    g.start()
    try:
        outs = [_run(g, PROBE) for _ in range(3)]
        assert [o["stdout"] for o in outs] == ["fresh 42\n"] * 3
        runs = [e.details for e in g.audit.entries() if e.event == "sandbox.run"]
        assert len(runs) == 3 and all(r["warm"] for r in runs)
        assert len({r["sandbox_id"] for r in runs}) == 3   # used once each
        assert all(o["isolation"]["runtime"] == runtime for o in outs)  # type: ignore[index]
        assert g.context.pools.policies() == ["default"]
        # a timeout is the action's own, not the policy's: the command is killed, a result
        slow = _run(g, "import time; time.sleep(30)", timeout_s=1)
        assert slow["timed_out"] is True
    finally:
        g.close()
    assert g.context.pools.policies() == []
    assert not settled_leftovers(g.settings), settled_leftovers(g.settings)


def test_with_code_pool_off_each_action_starts_a_cold_sandbox(tmp_path: Path,
                                                              runtime: str) -> None:
    g = Gate(gate_settings(tmp_path, runtime=runtime, code_pool=False))
    g.start()
    try:
        assert _run(g, PROBE)["stdout"] == "fresh 42\n"
        runs = [e.details for e in g.audit.entries() if e.event == "sandbox.run"]
        assert runs[0]["warm"] is False and g.context.pools.policies() == []
    finally:
        g.close()


def test_the_code_pool_is_on_by_default(tmp_path: Path, runtime: str) -> None:
    g = Gate(gate_settings(tmp_path, runtime=runtime))
    assert g.settings.pools.code_pool is True
    g.start()
    try:
        assert _run(g, PROBE)["stdout"] == "fresh 42\n"
        runs = [e.details for e in g.audit.entries() if e.event == "sandbox.run"]
        assert runs[0]["warm"] is True and g.context.pools.policies() == ["default"]
    finally:
        g.close()
    assert not settled_leftovers(g.settings), settled_leftovers(g.settings)


# what python3 -c reports, and the warm kernel must report the same (exit code, stdout, and
# stderr's last line: a traceback names "<cell N>" instead of "<string>" and shows the lines)
AS_PROGRAM = [
    "print(6*7)",
    "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
    "raise ValueError('boom')",
    "import sys; sys.exit('bye')",
    "import sys; sys.exit()",
    "import sys; sys.exit(300)",
    "import os; os._exit(4)",
    "print(__name__)",
    "import sys; print(repr(sys.stdin.read()))",
    "6*7",
    "def f():\n    1/0\nf()",
    "import time; time.sleep(30)",
]


def test_python_in_the_warm_kernel_reports_what_python3_c_reports(tmp_path: Path,
                                                                 runtime: str) -> None:
    def outcomes(pool: bool) -> list[tuple[object, ...]]:
        g = Gate(gate_settings(tmp_path / str(pool), runtime=runtime, pool_size=1,
                               code_pool=pool))
        g.start()
        try:
            out = []
            for code in AS_PROGRAM:
                r = _run(g, code, timeout_s=2)
                err = str(r["stderr"]).rstrip("\n").rsplit("\n", 1)[-1]
                out.append((r["exit_code"], r["stdout"], err, r["timed_out"]))
                if code.startswith("raise"):   # the kernel ran it (its cells' file name)
                    assert ('File "<cell' in str(r["stderr"])) is pool, r["stderr"]
            runs = [e.details for e in g.audit.entries() if e.event == "sandbox.run"]
            assert all(r["warm"] is pool for r in runs)
            return out
        finally:
            g.close()
            assert not settled_leftovers(g.settings), settled_leftovers(g.settings)
    warm, cold = outcomes(True), outcomes(False)
    for code, w, c in zip(AS_PROGRAM, warm, cold, strict=True):
        assert w == c, (code, w, c)
    assert warm[2] == (1, "", "ValueError: boom", False)
    assert warm[6][0] == 4 and warm[-1][0] == 137 and warm[-1][3] is True
