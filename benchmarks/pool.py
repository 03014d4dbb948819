#!/usr/bin/env python3
"""Warm pools, snapshots and idle memory, each next to its floor, for runc and runsc.

    sudo .venv/bin/python benchmarks/pool.py [--runs N] [--json PATH]

Cases (per driver), each timed with ``time.perf_counter_ns`` around one call only:

* ``raw run``        ``<runtime> run --bundle B ID`` of ``/bin/true`` on a bundle the library
                     wrote (the runtime's own start-to-exit floor; allocation and deletion
                     untimed);
* ``cold create``    ``mgr.create(spec, runtime=X)``: a running long-lived sandbox;
* ``pool acquire``   ``pool.acquire()`` from a pool of 2 that had time to refill (what an
                     agent pays per task with a warm pool); target <= 10 ms;
* ``+ first exec``   cold create + ``exec(["true"])`` vs acquire + ``exec(["true"])``;
* runsc only: ``checkpoint`` (``runsc checkpoint`` of a sandbox that imported Python
  modules in a background interpreter), ``restore`` (``snapshot.restore()``: a running clone)
  next to ``cold create``, and ``warm python ready``: a cold sandbox that then runs
  ``python3 -c 'import json, re, decimal'`` to completion vs a restored clone checked (one
  exec of ``pgrep``) to hold that interpreter, modules imported, already running;
* ``idle memory``    ``Sandbox.usage().memory_bytes`` (the sandbox's memory cgroup, which
  under runsc holds the Sentry and its gofer) of an idle pooled sandbox 1 s after start, and
  for runsc also the summed PSS of its host processes (runsc-sandbox, gofer); target for an
  idle runsc sandbox <= 30 MB.

Deletion is never timed (the Reaper does it off the critical path) but always waited for
before the leak check: nothing this benchmark starts may be left behind (exit 1 if it is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    bench_args,
    footprint,
    machine_info,
    remove_bench_state,
    summary,
    write_report,
)
from oneshot import RAW_FLAGS

from closedpaw.sandbox.drivers.oci_cli import OCICLIDriver, clean_env
from closedpaw.sandbox.host import inventory
from closedpaw.sandbox.host.statedir import SandboxDir, new_sandbox_id
from closedpaw.sandbox.lifecycle.manager import SandboxManager, require_root
from closedpaw.sandbox.lifecycle.sandbox import Sandbox
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings

DRIVERS = ("runc", "runsc")
DEFAULT_JSON = REPO / "benchmarks" / "results" / "pool.json"
BENCH = Settings.of(state_dir=Path("/run/closedpaw-bench-pool"),
                    cgroup_parent="closedpaw-bench-pool")
SPEC = SandboxSpec(limits=ResourceLimits(memory_mb=256, timeout_s=30))
WARM_PY = "import json, re, decimal, time; time.sleep(100000)"
WARMUP = [["sh", "-c", f"python3 -c '{WARM_PY}' >/dev/null 2>&1 &"]]
TARGET_ACQUIRE_MS = 10.0
TARGET_IDLE_RUNSC_MB = 30.0


class BenchError(Exception):
    pass


def ms_since(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def raw_run(driver: OCICLIDriver, name: str) -> float:
    sid = new_sandbox_id()
    sd = SandboxDir.allocate(BENCH, sid, SandboxSpec(), driver.features())
    try:
        sd.build(["/bin/true"], {}, "/tmp")
        driver.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = [driver.binary, "--root", str(driver.root_dir), *RAW_FLAGS[name], "run",
               "--bundle", str(sd.bundle), sid]
        t0 = time.perf_counter_ns()
        p = subprocess.run(cmd, env=clean_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, check=False)
        t = ms_since(t0)
        if p.returncode != 0:
            raise BenchError(f"raw {name} run exited {p.returncode}: {p.stderr[-400:]!r}")
    finally:
        driver.delete(sid)
        sd.teardown()
    return t


def pss_bytes(sid: str) -> int:
    """Summed PSS of the host processes whose command line names the sandbox."""
    total = 0
    for line in inventory.processes_mentioning(sid):
        pid = line.split(":", 1)[0]
        try:
            for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if row.startswith("Pss:"):
                    total += int(row.split()[1]) * 1024
        except OSError:
            continue
    return total


def check(sb: Sandbox) -> None:
    r = sb.exec(["true"])
    if r.exit_code != 0:
        raise BenchError(f"exec in {sb.id} exited {r.exit_code}: {r.stderr_text[-300:]}")


def bench_driver(mgr: SandboxManager, name: str, runs: int) -> dict[str, Any]:
    drv = mgr.driver(name)
    assert isinstance(drv, OCICLIDriver)
    s: dict[str, list[float]] = {k: [] for k in (
        "raw_run", "cold_create", "pool_acquire", "cold_create_exec", "pool_acquire_exec")}
    out: dict[str, Any] = {}
    with mgr.pool(spec=SPEC, runtime=name, size=2, idle_timeout_s=0) as pool:
        for i in range(runs + 1):                      # the first round is a warm-up
            keep = i > 0
            t = raw_run(drv, name)
            if keep:
                s["raw_run"].append(t)
            t0 = time.perf_counter_ns()
            sb = mgr.create(SPEC, runtime=name)
            t1 = ms_since(t0)
            check(sb)
            t2 = ms_since(t0)
            sb.delete()
            if not pool.wait_ready(timeout_s=60):
                raise BenchError(f"{name} pool did not refill: {list(pool.errors)}")
            t0 = time.perf_counter_ns()
            sb = pool.acquire()
            a1 = ms_since(t0)
            check(sb)
            a2 = ms_since(t0)
            sb.delete()
            mgr.reaper.drain()
            if keep:
                s["cold_create"].append(t1)
                s["cold_create_exec"].append(t2)
                s["pool_acquire"].append(a1)
                s["pool_acquire_exec"].append(a2)
        if pool.stats().acquired_cold:
            raise BenchError(f"{name}: an acquire was served cold; the numbers are not warm")
        # Idle memory of a pooled sandbox, 1 s after it became ready.
        if not pool.wait_ready(timeout_s=60):
            raise BenchError(f"{name} pool did not refill: {list(pool.errors)}")
        time.sleep(1.0)
        sb = pool.acquire()
        u = sb.usage()
        out["idle_memory_bytes"] = u.memory_bytes
        out["idle_peak_memory_bytes"] = u.peak_memory_bytes
        if name == "runsc":
            out["idle_host_pss_bytes"] = pss_bytes(sb.id)
        sb.delete()
    out |= {k: summary(v) for k, v in s.items()}
    med = {k: out[k]["median_ms"] for k in s}
    out["ratios"] = {
        "acquire_vs_cold_create": round(med["pool_acquire"] / med["cold_create"], 4),
        "acquire_vs_raw_run": round(med["pool_acquire"] / med["raw_run"], 4),
        "acquire_exec_vs_cold_create_exec": round(
            med["pool_acquire_exec"] / med["cold_create_exec"], 3),
    }
    out["targets_met"] = {"pool_acquire_le_10ms": med["pool_acquire"] <= TARGET_ACQUIRE_MS}
    if name == "runsc":
        out["targets_met"]["idle_le_30mb"] = (
            (out["idle_memory_bytes"] or 0) / 2**20 <= TARGET_IDLE_RUNSC_MB)
        out["snapshot"] = bench_snapshot(mgr, runs)
    return out


def bench_snapshot(mgr: SandboxManager, runs: int) -> dict[str, Any]:
    s: dict[str, list[float]] = {k: [] for k in (
        "cold_create", "restore", "cold_warm_python_ready", "restored_warm_python_ready")}
    t0 = time.perf_counter_ns()
    snap = mgr.snapshot(SPEC, warmup=WARMUP)
    take_ms = ms_since(t0)
    try:
        probe = ["sh", "-c", "pgrep -f 'import json' >/dev/null"]
        for i in range(runs + 1):
            keep = i > 0
            t0 = time.perf_counter_ns()
            sb = mgr.create(SPEC, runtime="runsc")
            t1 = ms_since(t0)
            if sb.exec(["python3", "-c", "import json, re, decimal"]).exit_code != 0:
                raise BenchError("python could not import its modules in a cold sandbox")
            t2 = ms_since(t0)
            sb.delete()
            t0 = time.perf_counter_ns()
            c = snap.restore()
            r1 = ms_since(t0)
            if c.exec(probe).exit_code != 0:
                raise BenchError("the warm interpreter is missing from a restored clone")
            r2 = ms_since(t0)
            mem = c.usage().memory_bytes
            c.delete()
            mgr.reaper.drain()
            if keep:
                s["cold_create"].append(t1)
                s["cold_warm_python_ready"].append(t2)
                s["restore"].append(r1)
                s["restored_warm_python_ready"].append(r2)
        out: dict[str, Any] = {k: summary(v) for k, v in s.items()}
        out["take_ms"] = round(take_ms, 1)
        out["checkpoint_ms"] = round(snap.checkpoint_ms, 1)
        out["image_bytes"] = snap.size_bytes()
        out["restored_clone_memory_bytes"] = mem
    finally:
        snap.remove()
    med = {k: out[k]["median_ms"] for k in s}
    out["ratios"] = {
        "restore_vs_cold_create": round(med["restore"] / med["cold_create"], 3),
        "warm_python_restored_vs_cold": round(
            med["restored_warm_python_ready"] / med["cold_warm_python_ready"], 3),
    }
    out["restore_wins"] = {"bare_sandbox": med["restore"] < med["cold_create"],
                           "warm_python": (med["restored_warm_python_ready"]
                                           < med["cold_warm_python_ready"])}
    return out


def render(res: dict[str, Any]) -> str:
    lines = [f"{'case':<34}{'min ms':>9}{'median ms':>11}   vs"]

    def row(label: str, d: dict[str, Any], note: str = "") -> None:
        lines.append(f"  {label:<32}{d['min_ms']:9.2f}{d['median_ms']:11.2f}   {note}")

    for name in DRIVERS:
        d = res[name]
        r = d["ratios"]
        lines.append(f"{name}  ({res['machine']['runtimes'][name]})")
        row("raw run /bin/true (floor)", d["raw_run"])
        row("cold manager.create", d["cold_create"])
        row("pool.acquire", d["pool_acquire"],
            f"{r['acquire_vs_cold_create']:.4f}x cold create, "
            f"{r['acquire_vs_raw_run']:.4f}x raw run (target <= {TARGET_ACQUIRE_MS:g} ms)")
        row("cold create + exec true", d["cold_create_exec"])
        row("pool.acquire + exec true", d["pool_acquire_exec"],
            f"{r['acquire_exec_vs_cold_create_exec']:.3f}x cold")
        mem = (d["idle_memory_bytes"] or 0) / 2**20
        extra = (f", host PSS {d['idle_host_pss_bytes'] / 2**20:.1f} MB"
                 if "idle_host_pss_bytes" in d else "")
        lines.append(f"  idle memory (cgroup)            {mem:9.1f} MB{extra}")
        if "snapshot" in d:
            sn = d["snapshot"]
            lines.append(f"  snapshot: take {sn['take_ms']:.0f} ms (checkpoint "
                         f"{sn['checkpoint_ms']:.0f} ms), image "
                         f"{sn['image_bytes'] / 2**20:.1f} MB, restored clone "
                         f"{(sn['restored_clone_memory_bytes'] or 0) / 2**20:.1f} MB")
            row("cold create (same rounds)", sn["cold_create"])
            row("snapshot.restore", sn["restore"],
                f"{sn['ratios']['restore_vs_cold_create']:.3f}x cold create")
            row("cold + start warm python", sn["cold_warm_python_ready"])
            row("restore, warm python running", sn["restored_warm_python_ready"],
                f"{sn['ratios']['warm_python_restored_vs_cold']:.3f}x cold")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__ or "", DEFAULT_JSON, 10, 5, argv)
    require_root()
    mgr = SandboxManager(BENCH)
    drivers: dict[str, OCICLIDriver] = {}
    for name in DRIVERS:
        drv = mgr.driver(name)
        assert isinstance(drv, OCICLIDriver)
        drivers[name] = drv
    pre = footprint(BENCH)
    if any(pre.values()):
        raise BenchError(f"leftovers from an earlier run under {BENCH.state_dir}: {pre}")
    res: dict[str, Any] = {"benchmark": "pool", "machine": machine_info(),
                           "config": {"runs": args.runs, "pool_size": 2,
                                      "spec_memory_mb": SPEC.limits.memory_mb,
                                      "warmup": WARMUP}}
    failure: BaseException | None = None
    try:
        for name in DRIVERS:
            res[name] = bench_driver(mgr, name, args.runs)
    except BaseException as e:
        failure = e
    finally:
        mgr.close()
    leaks: dict[str, Any] = {f"bench_{k}": v for k, v in footprint(BENCH).items()
                             if v}
    if mgr.reaper.errors:
        leaks["reaper_errors"] = list(mgr.reaper.errors)
    remove_bench_state(BENCH.state_dir, BENCH.sandbox.cgroup_parent, leaks)
    if failure is not None:
        if leaks:
            print(f"LEAKED: {json.dumps(leaks, indent=1)}", file=sys.stderr)
        raise failure
    res["machine"]["loadavg_end"] = os.getloadavg()
    return write_report(res, args.json, render(res), leaks)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        print(f"pool: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
