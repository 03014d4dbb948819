"""Shared helpers of the ClosedPaw benchmarks: timing statistics, machine info, leak checks.

Nothing here changes the engine; the benchmarks only call its public pieces.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from closedpaw.sandbox.host import inventory
from closedpaw.sandbox.host.cgroups import is_v2
from closedpaw.settings import Settings

REPO = Path(__file__).resolve().parent.parent
# the load when the benchmark started (this module is imported first): most benchmarks call
# machine_info() after their runs, when their own sandboxes have raised the load
_LOADAVG_AT_IMPORT = os.getloadavg()


def now_ms() -> float:
    return time.perf_counter_ns() / 1e6


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; return (wall ms, its result)."""
    t0 = time.perf_counter_ns()
    r = fn()
    return (time.perf_counter_ns() - t0) / 1e6, r


def summary(samples: Sequence[float]) -> dict[str, Any]:
    s = sorted(samples)
    return {
        "n": len(s),
        "min_ms": round(s[0], 2),
        "median_ms": round(statistics.median(s), 2),
        "mean_ms": round(statistics.fmean(s), 2),
        "max_ms": round(s[-1], 2),
        "stdev_ms": round(statistics.stdev(s), 2) if len(s) > 1 else 0.0,
        "samples_ms": [round(x, 2) for x in samples],
    }


def _first_line(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0] if out else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> dict[str, Any]:
    def g(*args: str) -> str:
        p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                           check=False)
        return p.stdout.strip()
    return {"commit": g("rev-parse", "HEAD"),
            "dirty": bool(g("status", "--porcelain", "--untracked-files=no"))}


def machine_info(binaries: Iterable[str] = ("runc", "runsc")) -> dict[str, Any]:
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cgroup": "v2" if is_v2() else "v1",
        "python": platform.python_version(),
        "loadavg_start": _LOADAVG_AT_IMPORT,
        "loadavg_end": os.getloadavg(),
        "runtimes": {b: _first_line([b, "--version"]) for b in binaries},
        "repo": _git(),
    }


# -- leak checks ---------------------------------------------------------------------------

def footprint(settings: Settings) -> dict[str, list[str]]:
    """What ClosedPaw has on the host under ``settings`` (the host inventory ``closedpaw gc``
    and the test fixtures use), by kind, as sorted lists of text; kinds with nothing left
    out. Compare two of them with :func:`new_items`."""
    inv = inventory.take(settings)
    kinds = {
        "state_dirs": [p.name for p in inv.state_dirs],
        "snapshots": [p.name for p in inv.snapshots],
        "containers": [f"{rt}:{c}" for rt, c in inv.containers],
        "cgroups": [str(p) for p in inv.cgroups],
        "mounts": [str(p) for p in inv.mounts],
        "processes": list(inv.processes),
    }
    return {k: sorted(v) for k, v in kinds.items() if v}


def new_items(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, list[str]]:
    """What ``after`` has that ``before`` had not, by kind."""
    return {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items()
            if set(v) - set(before.get(k, []))}


def remove_empty_cgroup_parents(parent: str) -> list[str]:
    """rmdir ``/<parent>`` in every hierarchy where it has no children; returns failures."""
    bad = []
    for base in inventory.cgroup_bases(parent):
        if base.is_dir():
            try:
                os.rmdir(base)
            except OSError as e:
                bad.append(f"{base}: {e}")
    return bad


Samples = dict[str, dict[str, list[float]]]


def run_rounds(cases: Sequence[tuple[str, Callable[[], dict[str, float]]]], runs: int,
               warmup: int, samples: Samples) -> None:
    """Warm every case up, then run them round-robin, the order rotating every round, so slow
    drift on the host hits all of them alike. Each call returns ``{metric: ms}``."""
    import sys

    for _key, fn in cases:
        for _ in range(warmup):
            fn()
    for i in range(runs):
        k = i % len(cases)
        for key, fn in [*cases[k:], *cases[:k]]:
            for metric, ms in fn().items():
                samples.setdefault(key, {}).setdefault(metric, []).append(ms)
        print(f"\rround {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def bench_args(doc: str, default_json: Path, runs: int, min_runs: int,
               argv: list[str] | None = None) -> Any:
    """The command line every benchmark takes: ``--runs N`` and ``--json PATH``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=runs,
                    help=f"measured runs per case (>= {min_runs})")
    ap.add_argument("--json", type=Path, default=default_json, help="where to write results")
    args = ap.parse_args(argv)
    if args.runs < min_runs:
        ap.error(f"--runs must be at least {min_runs}")
    return args


def write_report(res: dict[str, Any], path: Path, text: str, leaks: dict[str, Any]) -> int:
    """Print ``text``, write ``res`` (with its leaks) atomically to ``path`` as JSON; exit
    status 1 when anything leaked, else 0."""
    import json
    import sys

    res["leaks"] = leaks
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"\nwrote {path}")
    if leaks:
        print(f"\nLEAKED (fix before trusting anything): {json.dumps(leaks, indent=1)}",
              file=sys.stderr)
        return 1
    print("cleanup verified: nothing the benchmark started was left behind")
    return 0


def remove_bench_state(state_dir: Path, cgroup_parent: str, leaks: dict[str, Any],
                       key: str = "cgroup_parents") -> None:
    """When nothing leaked, remove the benchmark's own state dir and empty cgroup parents;
    parents that cannot go are recorded in ``leaks[key]``."""
    import shutil

    if leaks:
        return
    shutil.rmtree(state_dir, ignore_errors=True)
    if bad := remove_empty_cgroup_parents(cgroup_parent):
        leaks[key] = bad


def channel_bench_main(default_json: Path, prefix: str,
                       platforms: Sequence[tuple[str, Callable[[int, Path], dict[str, Any]]]]
                       ) -> int:
    """The shared main of the channel benchmarks: each ``(name, run)`` returns ``{name:
    summary, "floor_assistant_send": summary}`` for ``runs`` messages; prints each platform
    beside the floor (``Assistant.send`` called directly) and writes the JSON."""
    import argparse
    import json
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path, default=default_json)
    a = ap.parse_args()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        for _name, run in platforms:
            res.update(run(a.runs, Path(d)))
    floor = res["floor_assistant_send"]["median_ms"]
    print(f"{'':28}{'median':>10}{'floor':>10}{'ratio':>8}{'added':>10}")
    print(f"{'Assistant.send (floor)':28}{floor:>10.1f}")
    for name, _run in platforms:
        m = res[name]["median_ms"]
        print(f"{name + ' message -> answer':28}{m:>10.1f}{floor:>10.1f}{m / floor:>8.2f}"
              f"{m - floor:>10.1f}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"machine": machine_info(()), "runs": a.runs, **res},
                                 indent=2) + "\n")
    print(f"JSON: {a.json}")
    return 0
