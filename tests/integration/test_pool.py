"""Warm pools on real runc and runsc: refill, hand-out-once, the max-sandboxes cap, the idle
timeout, failing refills and clean shutdown. The ``mgr`` fixture proves nothing leaked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from closedpaw.errors import ConfigError, ImageNotFound, PoolExhausted
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings
from tests.conftest import leftovers

SPEC = SandboxSpec(limits=ResourceLimits(memory_mb=128, timeout_s=30))


@pytest.fixture
def capped(settings: Settings, request: pytest.FixtureRequest) -> Iterator[SandboxManager]:
    """A manager with max_sandboxes=3; fails the test on leaks like ``mgr``."""
    s = settings.with_(max_sandboxes=3)
    m = SandboxManager(s)
    yield m
    m.cleanup()
    left = leftovers(s)
    assert not left, f"{request.node.nodeid} leaked: {left}"
    assert not m.reaper.errors, m.reaper.errors


def test_pool_refills_and_never_hands_out_a_sandbox_twice(mgr: SandboxManager,
                                                          runtime: str) -> None:
    with mgr.pool(spec=SPEC, runtime=runtime, size=2, idle_timeout_s=0) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        seen: set[str] = set()
        for i in range(5):
            sb = pool.acquire(timeout_s=60)
            assert sb.id not in seen, "a pooled sandbox was handed out twice"
            seen.add(sb.id)
            assert sb.status is SandboxStatus.RUNNING
            with sb:
                # Nothing of an earlier user is visible: every sandbox is fresh.
                r = sb.exec(["sh", "-c", "ls /tmp; echo used-$1 > /tmp/mark", "sh", str(i)])
                assert r.exit_code == 0, r.stderr_text
                assert "mark" not in r.stdout_text
            # Deleted after use, never back in the pool or the manager.
            assert sb.status is SandboxStatus.STOPPED
            assert sb.id not in {b.id for b in mgr.list()}
        # The pool fills itself back up to its size in the background.
        assert pool.wait_ready(timeout_s=60), pool.errors
        ready_ids = {b.id for b in mgr.list()}
        assert len(ready_ids) == 2 and not ready_ids & seen
        st = pool.stats()
        assert st.ready == 2 and st.created >= 7 and st.acquired_warm + st.acquired_cold == 5
        assert st.acquired_warm >= 1 and st.refill_failures == 0
    assert mgr.list() == []


def test_a_refill_after_an_acquire_settles_unless_the_pool_ran_dry(mgr: SandboxManager,
                                                                   runtime: str) -> None:
    """The replacement of a taken sandbox waits ``settle_s`` (the taker's work first); a pool
    that ran dry refills at once."""
    with mgr.pool(spec=SPEC, runtime=runtime, size=2, idle_timeout_s=0,
                  settle_s=8.0) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        first = pool.acquire()
        try:
            time.sleep(2.0)   # far more than a refill takes; the settle is longer still
            assert pool.stats().ready == 1 and pool.stats().created == 2
            second = pool.acquire()   # the pool ran dry: it refills at once
            try:
                assert pool.wait_ready(1, timeout_s=6.0), "an empty pool waited its settle"
            finally:
                second.delete()
        finally:
            first.delete()
        with pytest.raises(ConfigError, match="settle"):
            mgr.pool(spec=SPEC, runtime=runtime, size=1, settle_s=-1)


def test_acquire_from_a_ready_pool_needs_no_runtime_call(mgr: SandboxManager,
                                                         runtime: str) -> None:
    with mgr.pool(spec=SPEC, runtime=runtime, size=1) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        sb = pool.acquire()
        with sb:
            assert pool.stats().acquired_warm == 1
            assert sb.exec(["echo", "warm"]).stdout_text == "warm\n"


def test_pool_never_exceeds_the_cap_and_acquire_at_the_cap_fails_clearly(
        capped: SandboxManager, runtime: str) -> None:
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(capped.list()))
            time.sleep(0.005)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        with pytest.raises(ConfigError, match="max_sandboxes"):
            capped.pool(spec=SPEC, runtime=runtime, size=4)
        mine = capped.create(SPEC, runtime=runtime)
        with capped.pool(spec=SPEC, runtime=runtime, size=2) as pool:
            assert pool.wait_ready(timeout_s=60), pool.errors
            a = pool.acquire()
            b = pool.acquire()
            # 3 live (mine, a, b): the refill waits for a slot instead of exceeding the cap.
            time.sleep(0.5)
            assert pool.ready == 0 and len(capped.list()) == 3
            t0 = time.monotonic()
            with pytest.raises(PoolExhausted, match="max_sandboxes"):
                pool.acquire(timeout_s=0.5)
            assert time.monotonic() - t0 >= 0.5
            # A slot frees up: the pool takes it, and only it.
            a.delete()
            assert pool.wait_ready(1, timeout_s=60), pool.errors
            assert pool.ready == 1 and len(capped.list()) == 3
            b.delete()
            assert pool.wait_ready(2, timeout_s=60)
            assert pool.stats().refill_failures == 0   # waiting for the cap is no failure
        mine.delete()
    finally:
        stop.set()
        w.join()
    assert peak[0] <= 3


def test_idle_timeout_drains_the_pool_and_the_next_acquire_warms_it(
        mgr: SandboxManager, runtime: str) -> None:
    with mgr.pool(spec=SPEC, runtime=runtime, size=2, idle_timeout_s=1.0) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        end = time.monotonic() + 30
        while pool.ready and time.monotonic() < end:
            time.sleep(0.05)
        assert pool.ready == 0 and pool.stats().expired == 2
        while mgr.list() and time.monotonic() < end:  # deleted by the refill thread
            time.sleep(0.05)
        assert mgr.list() == []
        with pool.acquire(timeout_s=60) as sb:       # empty: created on the spot
            assert sb.exec(["true"]).exit_code == 0
        assert pool.stats().acquired_cold == 1
        assert pool.wait_ready(timeout_s=60)         # and the pool is warm again


def test_a_failing_refill_is_reported_backs_off_and_acquire_raises_the_cause(
        mgr: SandboxManager, runtime: str) -> None:
    bad = SandboxSpec(image="no-such-image", limits=ResourceLimits(memory_mb=128))
    with mgr.pool(spec=bad, runtime=runtime, size=2) as pool:
        time.sleep(1.5)
        failures = pool.stats().refill_failures
        # Backoff 0.1, 0.2, 0.4, 0.8 s...: a handful of attempts, not a spin.
        assert 1 <= failures <= 6, failures
        assert pool.errors and "no-such-image" in pool.errors[-1]
        with pytest.raises(ImageNotFound, match="no-such-image"):
            pool.acquire(timeout_s=1)
        assert pool.ready == 0
    assert mgr.list() == []


def test_close_stops_refills_and_deletes_every_pooled_sandbox(mgr: SandboxManager,
                                                              runtime: str) -> None:
    pool = mgr.pool(spec=SPEC, runtime=runtime, size=3)
    time.sleep(0.2)                        # close in the middle of the refills
    pool.close()
    assert not pool._thread.is_alive()
    mgr.reaper.drain()
    assert mgr.list() == [] and pool.ready == 0
    with pytest.raises(PoolExhausted, match="closed"):
        pool.acquire()
    pool.close()                           # idempotent


def test_manager_cleanup_closes_open_pools(settings: Settings, runtime: str) -> None:
    m = SandboxManager(settings)
    pool = m.pool(spec=SPEC, runtime=runtime, size=2)
    assert pool.wait_ready(timeout_s=60), pool.errors
    m.cleanup()
    assert not pool._thread.is_alive()
    assert leftovers(settings) == []


def test_a_pooled_sandbox_that_died_while_waiting_is_never_handed_out(
        mgr: SandboxManager, runtime: str) -> None:
    """Its runtime process is killed from the host while it waits in the pool: the agent's
    channel breaks, the sandbox is torn down, and acquire hands out only living ones."""
    import os
    import signal

    with mgr.pool(spec=SPEC, runtime=runtime, size=2, idle_timeout_s=0) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        victim = next(b for b in mgr.list())
        sb_victim = mgr.get(victim.id)
        assert sb_victim.agent, "this test needs the in-sandbox agent"
        pid = mgr.driver(runtime).state_pid(victim.id)  # type: ignore[attr-defined]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the sandbox's init (the agent) dies
        deadline = time.monotonic() + 30
        while sb_victim.status is SandboxStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sb_victim.status is not SandboxStatus.RUNNING
        handed = []
        for _ in range(2):
            sb = pool.acquire(timeout_s=60)
            handed.append(sb.id)
            with sb:
                assert sb.exec(["echo", "alive"]).stdout == b"alive\n"
        assert victim.id not in handed
    mgr.reaper.drain()


def test_a_pool_with_kernels_hands_out_sandboxes_whose_kernel_already_runs(
        mgr: SandboxManager, runtime: str) -> None:
    with mgr.pool(spec=SPEC, runtime=runtime, size=1, idle_timeout_s=0,
                  kernels=("python",)) as pool:
        assert pool.wait_ready(timeout_s=60), pool.errors
        sb = pool.acquire(timeout_s=60)
        try:
            # before any cell of ours: the kernel process is there
            ps = sb.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"])
            assert "cp_pykernel" in ps.stdout_text, ps.stdout_text
            # and its namespace is a fresh interpreter's: the warm-up cell defined nothing
            r = sb.code.run("sorted(k for k in globals() if k != '__builtins__')")
            assert r.exit_code == 0 and not r.restarted, r
            assert r.value == "['__name__']", r.value
        finally:
            sb.delete_soon()
        # deleted in the background: gone from the manager's list, nothing left behind
        deadline = time.monotonic() + 30
        while sb.id in {s.id for s in mgr.list()} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sb.id not in {s.id for s in mgr.list()}
        assert sb.status is SandboxStatus.STOPPED


def test_a_pool_refuses_a_kernel_it_cannot_warm(mgr: SandboxManager, runtime: str) -> None:
    with pytest.raises(ConfigError, match="'ruby' cannot be warmed"):
        mgr.pool(spec=SPEC, runtime=runtime, size=1, kernels=("ruby",))
    assert not mgr.live.sandboxes()


def test_delete_soon_then_cleanup_deletes_once_and_leaves_nothing(mgr: SandboxManager,
                                                                  runtime: str) -> None:
    sb = mgr.create(SPEC, runtime=runtime)
    sb.delete_soon()
    mgr.cleanup()   # waits for the reaper; the sandbox is deleted by one of the two
    assert sb.status is SandboxStatus.STOPPED and not mgr.list()
    assert not mgr.reaper.errors, mgr.reaper.errors
