#!/usr/bin/env python3
"""A lifecycle soak: many sandboxes doing mixed work for a fixed time while others are created,
paused, deleted and garbage-collected beside them, then a leak check.

    sudo .venv/bin/python benchmarks/soak.py [--seconds 120] [--workers 6] [--json PATH]

Per runtime (runc, runsc), ``--workers`` threads loop until the time is up. Each creates a
sandbox (the agent on, or off every fourth time), runs 5-30 calls in it (echo, ``cat`` of
stdin, a code cell, a command with a random short timeout that may time out), sometimes pauses
and resumes it around a call, and deletes it; one more thread runs ``mgr.gc()`` in a loop.
Reported: calls, errors (anything raised that is not a timed-out result), p50/p99 latency of a
call, sandboxes made, gc runs and their errors, and the leaks afterwards (the host inventory
``closedpaw gc`` uses). Exits 1 on any error or leak. Not a speed benchmark: the floor printed
beside p50 is the same call's median in an idle sandbox at the start.
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    footprint,
    machine_info,
    remove_bench_state,
    write_report,
)

from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings

SOAK = Settings.of(state_dir=Path("/run/closedpaw-bench-soak"),
                   cgroup_parent="closedpaw-bench-soak", max_sandboxes=32)
DEFAULT_JSON = REPO / "benchmarks" / "results" / "soak.json"
SPEC = SandboxSpec(limits=ResourceLimits(memory_mb=128, disk_mb=8, timeout_s=30))


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2) if s else 0.0


def step(sb: Any, kind: str, i: int, data: bytes, t: float) -> None:
    """One call of the soak, checked."""
    if kind == "echo":
        r = sb.exec(["echo", str(i)])
        assert r.stdout == f"{i}\n".encode(), r
    elif kind == "cat":
        r = sb.exec(["cat"], stdin=data)
        assert r.stdout == data, (len(r.stdout), len(data))
    elif kind == "cell":
        r = sb.code.run(f"{i} * 2")
        assert r.value == str(i * 2) or r.restarted, r
    elif kind == "timeout":
        r = sb.exec(["sh", "-c", "sleep 0.6; echo done"], timeout_s=t)
        assert r.timed_out or r.stdout == b"done\n", r
    else:
        sb.pause()
        sb.resume()
        r = sb.exec(["true"])
        assert r.exit_code == 0, r


def soak(mgr: SandboxManager, runtime: str, seconds: float, workers: int) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[str] = []
    made = [0]
    gc_runs = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def call(fn: Any) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:
            with lock:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            return
        with lock:
            lat.append((time.perf_counter() - t0) * 1000)

    def worker(w: int) -> None:
        rnd = random.Random(w)
        n = 0
        while time.monotonic() < end:
            n += 1
            agent = n % 4 != 0
            try:
                sb = mgr.create(SPEC, runtime=runtime, agent=agent)
            except Exception as e:
                with lock:
                    errors.append(f"create: {type(e).__name__}: {str(e)[:200]}")
                continue
            with lock:
                made[0] += 1
            try:
                for i in range(rnd.randint(5, 30)):
                    k = rnd.random()
                    kind = ("echo" if k < 0.4 else "cat" if k < 0.6
                            else "cell" if k < 0.75 and agent else "timeout" if k < 0.9
                            else "pause")
                    data = rnd.randbytes(rnd.randint(0, 300_000)) if kind == "cat" else b""
                    t = rnd.choice([0.2, 0.5, 1.0])
                    call(lambda kind=kind, i=i, data=data, t=t, sb=sb: step(sb, kind, i,
                                                                             data, t))
            finally:
                try:
                    sb.delete()
                except Exception as e:
                    with lock:
                        errors.append(f"delete: {type(e).__name__}: {str(e)[:200]}")

    def collector() -> None:
        while time.monotonic() < end:
            rep = mgr.gc()
            with lock:
                gc_runs[0] += 1
                errors.extend(f"gc: {e}" for e in rep.errors)
            time.sleep(0.5)

    # floor: the same echo in an idle sandbox
    floor: list[float] = []
    with mgr.create(SPEC, runtime=runtime) as sb:
        for _ in range(20):
            t0 = time.perf_counter()
            sb.exec(["echo", "x"])
            floor.append((time.perf_counter() - t0) * 1000)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    threads.append(threading.Thread(target=collector))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mgr.cleanup()
    return {"runtime": runtime, "seconds": seconds, "workers": workers, "calls": len(lat),
            "errors": errors[:50], "error_count": len(errors), "sandboxes": made[0],
            "gc_runs": gc_runs[0], "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "idle_echo_median_ms": round(statistics.median(floor), 2)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--runtime", choices=["runc", "runsc", "both"], default="both")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    before = footprint(SOAK)
    res: dict[str, Any] = {"machine": machine_info(), "runs": []}
    lines = []
    for rt in (["runc", "runsc"] if args.runtime == "both" else [args.runtime]):
        with SandboxManager(SOAK) as mgr:
            r = soak(mgr, rt, args.seconds, args.workers)
        res["runs"].append(r)
        lines.append(f"{rt}: {r['calls']} calls in {r['seconds']:.0f} s, {r['sandboxes']} "
                     f"sandboxes, {r['gc_runs']} gc runs, {r['error_count']} errors; "
                     f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms (idle echo floor "
                     f"{r['idle_echo_median_ms']} ms, p50 "
                     f"{r['p50_ms'] / max(r['idle_echo_median_ms'], 0.01):.1f}x)")
        lines += [f"  {e}" for e in r["errors"][:10]]
    leaks = {k: v for k, v in footprint(SOAK).items() if set(v) - set(before.get(k, []))}
    remove_bench_state(SOAK.state_dir, SOAK.sandbox.cgroup_parent, leaks)
    rc = write_report(res, args.json, "\n".join(lines), leaks)
    return rc or (1 if any(r["error_count"] for r in res["runs"]) else 0)


if __name__ == "__main__":
    sys.exit(main())
