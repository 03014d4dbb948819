"""Concurrency that holds: 20 one-shot runs at once, and a soak of 1,000 execs through the
agent across 10 concurrent sandboxes, with 0 failures and (the mgr fixture) 0 leaks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

SMALL = ResourceLimits(memory_mb=128, disk_mb=8, timeout_s=60)


def test_twenty_concurrent_one_shots(mgr: SandboxManager, runtime: str) -> None:
    def one(i: int) -> tuple[int, bytes]:
        r = mgr.run(["python3", "-c", f"print({i})"], SandboxSpec(limits=SMALL),
                    runtime=runtime)
        return r.exit_code, r.stdout
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(one, range(20)))
    assert got == [(0, f"{i}\n".encode()) for i in range(20)]


@pytest.mark.slow
def test_soak_thousand_execs_across_ten_sandboxes(mgr: SandboxManager, runtime: str) -> None:
    def worker(w: int) -> int:
        ok = 0
        with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
            for i in range(100):
                if i % 10 == 0:
                    r = sb.code.run(f"n = {i}\nn * 2")
                    assert r.value == str(i * 2), r
                elif i % 3 == 0:
                    r = sb.exec(["cat"], stdin=f"{w}-{i}".encode())
                    assert r.stdout == f"{w}-{i}".encode(), r
                else:
                    r = sb.exec(["/bin/echo", str(i)])
                    assert r.stdout == f"{i}\n".encode(), r
                ok += 1
        return ok
    with ThreadPoolExecutor(10) as pool:
        assert sum(pool.map(worker, range(10))) == 1000
