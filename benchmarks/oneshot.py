#!/usr/bin/env python3
"""One-shot latency of ClosedPaw: ``python3 -c pass`` on the host, under the raw runtime, through
the library and through the CLI, side by side, for runc and runsc.

    sudo .venv/bin/python benchmarks/oneshot.py [--runs N] [--json PATH]

Cases (per driver), each timed with ``time.perf_counter_ns`` around one call only:

* ``host``     ``/usr/bin/python3 -c pass`` via subprocess with the sandbox's clean env: the
               floor of the work itself (shared by both drivers);
* ``raw``      ``runc --root R run --bundle B ID`` / ``runsc --root R --platform=ptrace
               --network=none --oci-seccomp run --bundle B ID`` on the very config.json the
               library writes (a fresh SandboxDir per run, allocated and torn down outside the
               timed region; the container is force-deleted afterwards, also untimed);
* ``library``  ``mgr.run(["python3", "-c", "pass"], runtime=X)`` in this warm process (probe
               cached); ``library+drain`` also waits for ``mgr.reaper.drain()`` (teardown);
* ``cli``      ``.venv/bin/closedpaw run --runtime X -- python3 -c pass`` end to end (the
               ``closedpaw`` script beside this interpreter when the checkout has no
               ``.venv``, e.g. a git worktree; ``PYTHONPATH`` names the package this benchmark
               imports, so the CLI runs the same code as the library case);
* ``py_floor`` the CLI's interpreter, same environment, importing only the standard-library
               modules the run path's own modules import (``-c "import argparse, json, ..."``,
               the list found at start): what any Python CLI doing this costs before a line
               of ours runs (shared by both drivers).

Cases run round-robin (the order rotates every round) after 2 warm-up runs each, so slow drift
on the host hits all of them alike. Targets: library <= 1.2x raw runc and <= 1.1x raw runsc
(medians), CLI <= library + 50 ms. Afterwards it checks that nothing it started leaked
(runtime containers, cgroups, mounts, processes, state dirs) and exits 1 if anything did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# this checkout's package first, also in a worktree whose interpreter has another installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    bench_args,
    footprint,
    machine_info,
    new_items,
    remove_bench_state,
    run_rounds,
    summary,
    write_report,
)

from closedpaw.sandbox.bundle.oci import BASE_ENV
from closedpaw.sandbox.drivers.oci_cli import OCICLIDriver, clean_env
from closedpaw.sandbox.host.statedir import SandboxDir, new_sandbox_id
from closedpaw.sandbox.lifecycle.manager import SandboxManager, require_root
from closedpaw.sandbox.spec import SandboxSpec
from closedpaw.settings import Settings

WARMUP = 2
DRIVERS = ("runc", "runsc")
HOST_ARGV = ["/usr/bin/python3", "-c", "pass"]
RAW_ARGV = ["/usr/bin/python3", "-c", "pass"]
LIB_ARGV = ["python3", "-c", "pass"]
RAW_FLAGS = {"runc": [], "runsc": ["--platform=ptrace", "--network=none", "--oci-seccomp"]}
LIST_ARGS = {"runc": ["list", "--quiet"], "runsc": ["list", "-quiet"]}
TARGET_LIB_RATIO = {"runc": 1.2, "runsc": 1.1}
TARGET_CLI_DELTA_MS = 50.0
CLI = REPO / ".venv" / "bin" / "closedpaw"
if not CLI.exists():  # a worktree without its own venv: the script of the venv running us
    CLI = Path(sys.executable).with_name("closedpaw")
DEFAULT_JSON = REPO / "benchmarks" / "results" / "oneshot.json"

BENCH = Settings.of(state_dir=Path("/run/closedpaw-bench"), cgroup_parent="closedpaw-bench")
CLI_DEFAULTS = Settings()  # what the CLI uses (no CLOSEDPAW_* in its environment)


class BenchError(Exception):
    pass


# -- cases ---------------------------------------------------------------------------------
# Each case is a callable doing ONE run and returning {metric: ms}; anything it does outside
# the timed call (state dir allocation, deletion, teardown) is not counted.

Case = Callable[[], dict[str, float]]


def host_case() -> Case:
    env = dict(BASE_ENV)  # the environment the sandboxed program gets

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        p = subprocess.run(HOST_ARGV, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)
        t = (time.perf_counter_ns() - t0) / 1e6
        if p.returncode != 0:
            raise BenchError(f"host python exited {p.returncode}")
        return {"host": t}
    return once


def raw_case(name: str, driver: OCICLIDriver, raw_live: set[str]) -> Case:
    root = driver.root_dir
    features = driver.features()
    env = clean_env()  # the same runtime environment the driver uses

    def once() -> dict[str, float]:
        sid = new_sandbox_id()
        sd = SandboxDir.allocate(BENCH, sid, SandboxSpec(), features)
        raw_live.add(sid)
        try:
            sd.build(RAW_ARGV, {}, "/tmp")
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            cmd = [driver.binary, "--root", str(root), *RAW_FLAGS[name],
                   "run", "--bundle", str(sd.bundle), sid]
            t0 = time.perf_counter_ns()
            p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               check=False)
            t = (time.perf_counter_ns() - t0) / 1e6
            if p.returncode != 0:
                raise BenchError(f"raw {name} run exited {p.returncode}: "
                                 f"{p.stderr.decode(errors='replace')[-600:]}")
        finally:
            driver.delete(sid)        # `run` removes it on exit; --force makes sure
            sd.teardown()
            raw_live.discard(sid)
        return {"raw": t}
    return once


def library_case(name: str, mgr: SandboxManager) -> Case:
    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        r = mgr.run(LIB_ARGV, runtime=name)
        t1 = time.perf_counter_ns()
        mgr.reaper.drain()
        t2 = time.perf_counter_ns()
        if r.exit_code != 0:
            raise BenchError(f"library {name} run exited {r.exit_code}: {r.stderr_text[-600:]}")
        if r.isolation.runtime != name:
            raise BenchError(f"library ran {r.isolation.runtime}, not {name}")
        return {"library": (t1 - t0) / 1e6, "library_drain": (t2 - t0) / 1e6,
                "library_in_runtime": r.duration_ms}
    return once


def cli_case(name: str) -> Case:
    # no CLOSEDPAW_*: defaults; the package this benchmark imports (a checkout's src)
    env = {"PATH": clean_env()["PATH"], "LANG": "C.UTF-8", **_src_path()}
    cmd = [str(CLI), "run", "--runtime", name, "--", *LIB_ARGV]

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)
        t = (time.perf_counter_ns() - t0) / 1e6
        if p.returncode != 0:
            raise BenchError(f"CLI {name} exited {p.returncode}: "
                             f"{p.stderr.decode(errors='replace')[-600:]}")
        return {"cli": t}
    return once


RUN_PATH_PROBE = (
    "import sys; before = set(sys.modules)\n"
    "import closedpaw.cli.main as m; m.build_parser('run')\n"
    "import closedpaw.sandbox.lifecycle.manager, closedpaw.sandbox.host.reaper\n"
    "print(' '.join(sorted(k for k in set(sys.modules) - before\n"
    "                      if not k.startswith(('closedpaw', '_')) and '.' not in k)))")


def cli_python() -> str:
    """The interpreter the CLI script runs on (its shebang)."""
    first = CLI.read_text().splitlines()[0]
    return first.removeprefix("#!").split()[0]


def py_floor_case() -> tuple[Case, list[str]]:
    env = {"PATH": clean_env()["PATH"], "LANG": "C.UTF-8", **_src_path()}  # as the CLI's
    py = cli_python()
    mods = subprocess.run([py, "-c", RUN_PATH_PROBE], env=env,
                          capture_output=True, text=True, check=True).stdout.split()
    cmd = [py, "-c", "import " + ", ".join(mods)]

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)
        t = (time.perf_counter_ns() - t0) / 1e6
        if p.returncode != 0:
            raise BenchError(f"py_floor exited {p.returncode}: {p.stderr.decode()[-600:]}")
        return {"py_floor": t}
    return once, mods


def _src_path() -> dict[str, str]:
    """PYTHONPATH for the probe: the package this benchmark imports (a checkout's src)."""
    import closedpaw

    return {"PYTHONPATH": str(Path(closedpaw.__file__).resolve().parents[1])}


# -- leak bookkeeping ------------------------------------------------------------------------

# -- report ------------------------------------------------------------------------------------

def _fmt_row(case: str, s: dict[str, Any] | None, ratio: str, floor: str) -> str:
    lo = f"{s['min_ms']:8.1f}" if s else f"{'-':>8}"
    med = f"{s['median_ms']:9.1f}" if s else f"{'-':>9}"
    return f"  {case:<28}{lo}  {med}  {ratio:<26}{floor}"


def render(results: dict[str, Any]) -> str:
    host = results["host"]
    lines = []
    for name in DRIVERS:
        d = results[name]
        r = d["ratios"]
        lines.append("")
        lines.append(f"{name}  ({results['machine']['runtimes'][name]})")
        lines.append(f"  {'case':<28}{'min ms':>8}  {'median ms':>9}  {'ratio':<26}floor")
        lines.append(_fmt_row("host python3 -c pass", host, "", ""))
        lines.append(_fmt_row(f"raw {name} run", d["raw"],
                              f"{r['raw_vs_host']:.2f}x", "host"))
        ok = "ok" if r["library_vs_raw"] <= TARGET_LIB_RATIO[name] else "MISS"
        lines.append(_fmt_row("library mgr.run", d["library"],
                              f"{r['library_vs_raw']:.2f}x ({ok} <= "
                              f"{TARGET_LIB_RATIO[name]}x)", f"raw {name}"))
        lines.append(_fmt_row("library + reaper.drain", d["library_drain"],
                              f"{r['library_drain_vs_raw']:.2f}x", f"raw {name}"))
        lines.append(_fmt_row("  (spawn->exit inside lib)", d["library_in_runtime"],
                              f"{r['library_in_runtime_vs_raw']:.2f}x", f"raw {name}"))
        ok = "ok" if r["cli_minus_library_ms"] <= TARGET_CLI_DELTA_MS else "MISS"
        lines.append(_fmt_row("CLI closedpaw run", d["cli"],
                              f"{r['cli_minus_library_ms']:+.1f} ms ({ok} <= "
                              f"{TARGET_CLI_DELTA_MS:.0f})", "library"))
        ours = r["cli_minus_library_ms"] - results["py_floor"]["median_ms"]
        lines.append(_fmt_row("  py start + stdlib (floor)", results["py_floor"],
                              f"CLI-lib beyond it {ours:+.1f} ms", "of CLI - library"))
    lines.append("")
    lines.append("ratios and deltas compare medians; min-based ones are in the JSON.")
    return "\n".join(lines)


def ratios(d: dict[str, Any], host: dict[str, Any]) -> dict[str, float]:
    def q(a: dict[str, Any], b: dict[str, Any], k: str) -> float:
        return round(a[k] / b[k], 3)
    return {
        "raw_vs_host": q(d["raw"], host, "median_ms"),
        "library_vs_raw": q(d["library"], d["raw"], "median_ms"),
        "library_drain_vs_raw": q(d["library_drain"], d["raw"], "median_ms"),
        "library_in_runtime_vs_raw": q(d["library_in_runtime"], d["raw"], "median_ms"),
        "library_minus_raw_ms": round(d["library"]["median_ms"] - d["raw"]["median_ms"], 2),
        "cli_minus_library_ms": round(d["cli"]["median_ms"] - d["library"]["median_ms"], 2),
        "min_library_vs_raw": q(d["library"], d["raw"], "min_ms"),
        "min_cli_minus_library_ms": round(d["cli"]["min_ms"] - d["library"]["min_ms"], 2),
    }


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__ or "", DEFAULT_JSON, 15, 10, argv)
    require_root()
    if not CLI.exists():
        raise BenchError(f"{CLI} not found: run make deps (pip install -e . into .venv)")

    mgr = SandboxManager(BENCH)
    drivers: dict[str, OCICLIDriver] = {}
    for name in DRIVERS:
        drv = mgr.driver(name)  # resolves + probes (cached in data_dir/probe.json)
        assert isinstance(drv, OCICLIDriver)
        if drv.global_args() != ["--root", str(drv.root_dir), *RAW_FLAGS[name]]:
            raise BenchError(f"{name}: the library's global flags {drv.global_args()} differ "
                             f"from the raw case's; update RAW_FLAGS")
        drivers[name] = drv

    pre = footprint(BENCH)
    if any(pre.values()):
        raise BenchError(f"leftovers from an earlier run under {BENCH.state_dir} / "
                         f"{BENCH.sandbox.cgroup_parent}; clean them first: {pre}")
    cli_before = footprint(CLI_DEFAULTS)

    raw_live: set[str] = set()
    floor_case, floor_modules = py_floor_case()
    cases: list[tuple[str, Case]] = [("host", host_case()), ("py_floor", floor_case)]
    for name, drv in drivers.items():
        cases += [(f"{name}:raw", raw_case(name, drv, raw_live)),
                  (f"{name}:library", library_case(name, mgr)),
                  (f"{name}:cli", cli_case(name))]

    samples: dict[str, dict[str, list[float]]] = {k: {} for k, _ in cases}
    failure: BaseException | None = None
    t_start = time.monotonic()
    try:
        run_rounds(cases, args.runs, WARMUP, samples)
    except BaseException as e:
        failure = e
    finally:
        # Cleanup whatever this process started, even after a failure.
        mgr.close()
        for sid in list(raw_live):
            for drv in drivers.values():
                drv.delete(sid)
    elapsed = time.monotonic() - t_start

    # -- leak check ---------------------------------------------------------------------------
    leaks: dict[str, Any] = {}
    if mgr.reaper.errors:
        leaks["reaper_errors"] = list(mgr.reaper.errors)
    after = footprint(BENCH)
    leaks.update({f"bench_{k}": v for k, v in after.items() if v})
    cli_new: dict[str, list[str]] = {}
    for _ in range(10):  # the CLI drains before exiting; allow a moment for other users' runs
        cli_new = new_items(cli_before, footprint(CLI_DEFAULTS))
        if not cli_new:
            break
        time.sleep(0.3)
    leaks.update({f"cli_{k}": v for k, v in cli_new.items()})
    remove_bench_state(BENCH.state_dir, BENCH.sandbox.cgroup_parent, leaks, "bench_cgroup_parents")

    if failure is not None:
        if leaks:
            print(f"LEAKED: {json.dumps(leaks, indent=1)}", file=sys.stderr)
        raise failure

    host = summary(samples["host"]["host"])
    py_floor = summary(samples["py_floor"]["py_floor"])
    results: dict[str, Any] = {
        "benchmark": "oneshot",
        "command": "python3 -c pass",
        "machine": machine_info(),
        "config": {
            "runs": args.runs, "warmup": WARMUP, "order": "round-robin, rotating",
            "bench_settings": {"state_dir": str(BENCH.state_dir),
                               "cgroup_parent": BENCH.sandbox.cgroup_parent},
            "cli_settings": {"state_dir": str(CLI_DEFAULTS.state_dir),
                             "cgroup_parent": CLI_DEFAULTS.sandbox.cgroup_parent},
            "host_argv": HOST_ARGV, "raw_argv": RAW_ARGV, "library_argv": LIB_ARGV,
            "raw_commands": {n: [d.binary, "--root", str(d.root_dir), *RAW_FLAGS[n], "run",
                                 "--bundle", "<state_dir>/sandboxes/<id>", "<id>"]
                             for n, d in drivers.items()},
            "cli_command": [str(CLI), "run", "--runtime", "<X>", "--", *LIB_ARGV],
            "targets": {"library_vs_raw_max": TARGET_LIB_RATIO,
                        "cli_minus_library_max_ms": TARGET_CLI_DELTA_MS},
            "elapsed_s": round(elapsed, 1),
        },
        "host": host,
        "py_floor": py_floor,
        "py_floor_modules": floor_modules,
    }
    results["machine"]["loadavg_end"] = os.getloadavg()
    for name in DRIVERS:
        d = {m: summary(v) for m, v in samples[f"{name}:raw"].items()}
        d |= {m: summary(v) for m, v in samples[f"{name}:library"].items()}
        d |= {m: summary(v) for m, v in samples[f"{name}:cli"].items()}
        d["ratios"] = ratios(d, host)
        d["targets_met"] = {
            "library": d["ratios"]["library_vs_raw"] <= TARGET_LIB_RATIO[name],
            "cli": d["ratios"]["cli_minus_library_ms"] <= TARGET_CLI_DELTA_MS,
        }
        results[name] = d
    return write_report(results, args.json, render(results), leaks)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        print(f"oneshot: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
