"""The host pids limit of a sandbox and the budget of all sandboxes (the measured model is in
docs/sandbox-hardening.md; the runtime tests are in tests/adversarial/test_pid_budget.py)."""

from __future__ import annotations

from pathlib import Path

from closedpaw.sandbox.bundle.resources import cgroup_resources, host_pids, runsc_host_pids
from closedpaw.sandbox.host.cgroups import PidBudget, host_tasks, pid_budget
from closedpaw.sandbox.spec import ResourceLimits

#: (processes, the most host tasks seen) under runsc ptrace, from docs/sandbox-hardening.md
MEASURED = ((16, 329), (32, 516), (64, 1873), (128, 3831))


def test_the_runsc_limit_covers_every_measurement_with_margin() -> None:
    for n, seen in MEASURED:
        assert runsc_host_pids(n) >= 1.3 * seen, (n, runsc_host_pids(n), seen)
    assert [runsc_host_pids(n) for n in (1, 64)] == [80, 3136]
    lim = ResourceLimits(max_processes=64)
    assert host_pids(lim, "cgroup") == 64 and host_pids(lim, "rlimit") == 3136
    assert cgroup_resources(lim, "rlimit")["pids"]["limit"] == 3136
    assert cgroup_resources(lim, "cgroup")["pids"]["limit"] == 64


def test_the_budget_sums_the_reservations_of_one_parent(tmp_path: Path) -> None:
    base = tmp_path / "pids" / "cp"
    for sid, own, ctr in (("a", "3136", None), ("b", None, "64"), ("c", "max", "80")):
        (base / sid / "ctr").mkdir(parents=True)
        if own is not None:
            (base / sid / "pids.max").write_text(own + "\n")
        if ctr is not None:
            (base / sid / "ctr" / "pids.max").write_text(ctr + "\n")
    (tmp_path / "pids" / "other" / "x").mkdir(parents=True)
    (tmp_path / "pids" / "other" / "x" / "pids.max").write_text("9999\n")
    b = pid_budget("cp", root=tmp_path)
    assert (b.committed, b.sandboxes) == (3136 + 64 + 80, 3)
    assert pid_budget("none", root=tmp_path).committed == 0


def test_left_is_bounded_by_the_share_and_by_the_host() -> None:
    assert PidBudget(32768, 16384, 16000, 3, 500).left == 384
    assert PidBudget(32768, 16384, 0, 0, 29000).left == 491       # 90% of 32768 - 29000
    assert PidBudget(32768, 16384, 20000, 5, 0).left == 0


def test_host_tasks_reads_loadavg(tmp_path: Path) -> None:
    f = tmp_path / "loadavg"
    f.write_text("0.50 0.40 0.30 2/158 12345\n")
    assert host_tasks(f) == 158
    f.write_text("garbage")
    assert host_tasks(f) == 0
    assert host_tasks() > 0
