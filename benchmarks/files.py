#!/usr/bin/env python3
"""/output copy-back: ClosedPaw's bounded collector against a plain copy, side by side.

    sudo .venv/bin/python benchmarks/files.py [--runs N] [--json PATH] [--before REV]

The source is a tmpfs (like a sandbox's /output) holding 200 files of 64 KiB in 10
directories and one 16 MiB file; each case copies it into a fresh directory on the same disk
as the state dir, timed around the copy only (the destination is removed untimed):

* ``floor``    ``shutil.copytree`` (no link checks, no budget, no atomic landing);
* ``collect``  ``closedpaw.sandbox.host.files.collect_output`` with the /output cap as budget
               and a deadline (openat/O_NOFOLLOW, SEEK_DATA, written aside then linked);
* ``before``   with ``--before REV``: ``collect_output`` of that git revision (loaded from
               ``git show REV:src/closedpaw/sandbox/host/files.py``), for a regression check.

Cases run round-robin after 2 warm-up runs each. Writes JSON to benchmarks/results/files.json.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    bench_args,
    machine_info,
    run_rounds,
    summary,
    timed,
    write_report,
)

from closedpaw.sandbox.host.files import collect_output, mount_output, unmount_output

DEFAULT_JSON = REPO / "benchmarks" / "results" / "files.json"
CAP_MB = 64
WARMUP = 2


def _populate(src: Path) -> int:
    total = 0
    block = os.urandom(64 * 1024)
    for d in range(10):
        (src / f"d{d}").mkdir()
        for f in range(20):
            (src / f"d{d}" / f"f{f}.bin").write_bytes(block)
            total += len(block)
    big = os.urandom(16 << 20)
    (src / "big.bin").write_bytes(big)
    return total + len(big)


def _old_collector(rev: str) -> Callable[[Path, Path], Any]:
    text = subprocess.run(["git", "-C", str(REPO), "show",
                           f"{rev}:src/closedpaw/sandbox/host/files.py"],
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="cp-bench-old-")) / "old_files.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_files", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn: Callable[[Path, Path], Any] = mod.collect_output
    return fn


def main(argv: list[str] | None = None) -> int:
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--before")
    known, rest = pre.parse_known_args(argv)
    args = bench_args(__doc__ or "", DEFAULT_JSON, 15, 5, rest)
    if os.geteuid() != 0:
        print("benchmarks/files.py needs root (it mounts a tmpfs)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cp-bench-files-", dir="/var/tmp"))
    src = work / "src"
    mount_output(src, CAP_MB, uid=0, gid=0)
    try:
        size = _populate(src)
        n = [0]

        def dest() -> Path:
            n[0] += 1
            return work / f"dst{n[0]}"

        def case(copy: Callable[[Path, Path], Any]) -> Callable[[], dict[str, float]]:
            def run() -> dict[str, float]:
                d = dest()
                ms, _ = timed(lambda: copy(src, d))
                shutil.rmtree(d)
                return {"ms": ms}
            return run

        def new(s: Path, d: Path) -> Any:
            copied, skipped = collect_output(s, d, max_bytes=CAP_MB << 20,
                                             deadline=time.monotonic() + 60)
            assert len(copied) == 201 and not skipped, skipped
            return copied

        cases: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("floor", case(lambda s, d: shutil.copytree(s, d))), ("collect", case(new))]
        if known.before:
            cases.append(("before", case(_old_collector(known.before))))
        samples: dict[str, dict[str, list[float]]] = {}
        run_rounds(cases, args.runs, WARMUP, samples)
    finally:
        unmount_output(src)
        shutil.rmtree(work, ignore_errors=True)
    res: dict[str, Any] = {"machine": machine_info(()), "bytes": size, "files": 201,
                           "before_rev": known.before}
    for k, v in samples.items():
        res[k] = summary(v["ms"])
    floor = res["floor"]["median_ms"]
    lines = [f"/output copy-back of {size / (1 << 20):.1f} MiB in 201 files (tmpfs -> disk)",
             f"  {'case':<10}{'min ms':>8}  {'median ms':>9}  ratio to floor (medians)"]
    for k in ("floor", "collect", "before"):
        if k in res:
            s = res[k]
            lines.append(f"  {k:<10}{s['min_ms']:8.1f}  {s['median_ms']:9.1f}  "
                         f"{s['median_ms'] / floor:.2f}x")
    return write_report(res, args.json, "\n".join(lines), {})


if __name__ == "__main__":
    sys.exit(main())
