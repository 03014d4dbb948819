#!/usr/bin/env python3
"""Cold one-shot latency per image and driver, next to the host-bind image running the same
command, and the host itself as the floor.

    sudo .venv/bin/python benchmarks/images.py [--runs N] [--json PATH]
    sudo .venv/bin/python benchmarks/images.py --import-only [--runs N] [--json PATH]

"Cold" means a fresh sandbox per run (``mgr.run``): for a store image that includes mounting
its overlay (a tmpfs for the upper layer plus overlayfs) and, in ``+drain``, unmounting it.
Commands: ``python3 -c pass`` (python, multi), ``node -e 0`` (node), ``bash -c :`` (shell).

Cases per driver: ``host-bind <cmd>`` (the default image: the host's /usr, read-only root, no
overlay) and ``<image>`` for python, node, shell and multi; plus the host running each command
without a sandbox. Images are built first if missing (``closedpaw image build``). Cases run
round-robin, rotating, after 2 warm-up runs each. Results go to
``benchmarks/results/images.json``; exit 1 if anything leaked.

``--import-only`` times importing a normal image instead: an OCI layout whose one gzip layer
holds the host's ``/usr/lib/python3.X`` (thousands of real files, tens of MB), imported into
a fresh store each run (unpack, digest, install), beside the floor of GNU ``tar -xzf`` of the
same layer into an empty directory, in wall time and CPU time (user+sys). Results go to
``benchmarks/results/images-import.json``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    bench_args,
    footprint,
    machine_info,
    run_rounds,
    summary,
    write_report,
)

from closedpaw.sandbox.bundle.oci import BASE_ENV
from closedpaw.sandbox.images.debootstrap import RECIPES, build_image
from closedpaw.sandbox.images.store import ImageStore
from closedpaw.sandbox.lifecycle.manager import SandboxManager, require_root
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings

WARMUP = 2
DRIVERS = ("runc", "runsc")
COMMANDS = {"python": ["python3", "-c", "pass"], "node": ["node", "-e", "0"],
            "bash": ["bash", "-c", ":"]}
IMAGE_CMD = {"python": "python", "node": "node", "shell": "bash", "multi": "python"}
BENCH = Settings.of(state_dir=Path("/run/closedpaw-bench-images"),
                    cgroup_parent="closedpaw-bench-images")
LIMITS = ResourceLimits(memory_mb=512, disk_mb=64, timeout_s=60)
DEFAULT_JSON = REPO / "benchmarks" / "results" / "images.json"

Case = Callable[[], dict[str, float]]


class BenchError(Exception):
    pass


def host_case(cmd: str) -> Case:
    # The host's own binaries, never a PATH shim (pyenv's python3 is a bash script).
    argv = [f"/usr/bin/{COMMANDS[cmd][0]}", *COMMANDS[cmd][1:]]

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        p = subprocess.run(argv, env=dict(BASE_ENV), stdin=subprocess.DEVNULL,
                           capture_output=True, check=False)
        t = (time.perf_counter_ns() - t0) / 1e6
        if p.returncode != 0:
            raise BenchError(f"host {argv} exited {p.returncode}")
        return {"run": t}
    return once


def sandbox_case(mgr: SandboxManager, driver: str, image: str, cmd: str) -> Case:
    spec = SandboxSpec(image=image, limits=LIMITS)
    argv = COMMANDS[cmd]

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        r = mgr.run(argv, spec, runtime=driver)
        t1 = time.perf_counter_ns()
        mgr.reaper.drain()
        t2 = time.perf_counter_ns()
        if r.exit_code != 0:
            raise BenchError(f"{driver} {image} {argv} exited {r.exit_code}: "
                             f"{r.stderr_text[-400:]}")
        return {"run": (t1 - t0) / 1e6, "run_drain": (t2 - t0) / 1e6}
    return once


def import_layout(work: Path) -> tuple[Path, Path]:
    """An OCI layout of one gzip layer holding the host's Python standard library, and that
    layer as a file (for the floor)."""
    import gzip
    import hashlib
    import io
    import json
    import tarfile

    lib = Path(f"/usr/lib/python3.{sys.version_info.minor}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(lib, arcname=f"usr/lib/{lib.name}", recursive=True)
    raw = buf.getvalue()
    layer = gzip.compress(raw, compresslevel=6, mtime=0)
    layout = work / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, Any]:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return {"digest": f"sha256:{h}", "size": len(data)}

    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **blob(layer)}]}).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    (work / "layer.tar.gz").write_bytes(layer)
    return layout, work / "layer.tar.gz"


def import_main(argv: list[str]) -> int:
    import resource
    import tempfile

    from closedpaw.sandbox.images.oci import import_image

    args = bench_args(__doc__ or "", DEFAULT_JSON.with_name("images-import.json"), 10, 3,
                      argv)
    require_root()
    # On the store's filesystem, as a real store would be (not a tmpfs /tmp).
    base = Path("/var/tmp")
    with tempfile.TemporaryDirectory(prefix="closedpaw-bench-import-", dir=base) as w:
        work = Path(w)
        layout, layer = import_layout(work)
        n = {"i": 0}

        def cpu(who: int) -> float:
            ru = resource.getrusage(who)
            return (ru.ru_utime + ru.ru_stime) * 1000

        def importing() -> dict[str, float]:
            n["i"] += 1
            store = ImageStore(work / f"store{n['i']}")
            c0 = cpu(resource.RUSAGE_SELF)
            t0 = time.perf_counter_ns()
            img = import_image(store, layout, name="bench")
            t = (time.perf_counter_ns() - t0) / 1e6
            c = cpu(resource.RUSAGE_SELF) - c0
            if not store.verify(img.name):
                raise BenchError("the imported image does not verify")
            shutil.rmtree(store.root)
            return {"import": t, "cpu": c}

        def floor() -> dict[str, float]:
            n["i"] += 1
            d = work / f"floor{n['i']}"
            d.mkdir()
            c0 = cpu(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter_ns()
            subprocess.run(["tar", "-xzf", str(layer), "-C", str(d)], check=True)
            t = (time.perf_counter_ns() - t0) / 1e6
            c = cpu(resource.RUSAGE_CHILDREN) - c0
            shutil.rmtree(d)
            return {"import": t, "cpu": c}

        cases: list[tuple[str, Case]] = [("tar", floor), ("closedpaw", importing)]
        samples: dict[str, dict[str, list[float]]] = {k: {} for k, _ in cases}
        run_rounds(cases, args.runs, 1, samples)
        size = layer.stat().st_size
    res: dict[str, Any] = {
        "benchmark": "images-import", "machine": machine_info(),
        "config": {"runs": args.runs, "layer_gz_bytes": size},
        "cases": {k: {m: summary(v) for m, v in s.items()} for k, s in samples.items()},
    }
    c, f = res["cases"]["closedpaw"]["import"], res["cases"]["tar"]["import"]
    cc, fc = res["cases"]["closedpaw"]["cpu"], res["cases"]["tar"]["cpu"]
    res["ratio_vs_tar"] = round(c["median_ms"] / f["median_ms"], 3)
    res["cpu_ratio_vs_tar"] = round(cc["median_ms"] / fc["median_ms"], 3)
    text = (f"import of a normal image (one gzip layer, {size / 2**20:.1f} MiB)\n"
            f"  {'case':<22}{'min ms':>8}  {'median ms':>9}  vs floor  "
            f"{'cpu med ms':>10}  vs floor\n"
            f"  {'tar -xzf (floor)':<22}{f['min_ms']:8.1f}  {f['median_ms']:9.1f}  1.00x     "
            f"{fc['median_ms']:10.1f}  1.00x\n"
            f"  {'closedpaw import':<22}{c['min_ms']:8.1f}  {c['median_ms']:9.1f}  "
            f"{res['ratio_vs_tar']:.2f}x     {cc['median_ms']:10.1f}  "
            f"{res['cpu_ratio_vs_tar']:.2f}x\n"
            "cpu = user+sys of the import (in process) or of tar (child): less swayed by a "
            "busy machine than wall time")
    return write_report(res, args.json, text, {})


def render(res: dict[str, Any]) -> str:
    lines = []
    for drv in DRIVERS:
        lines += ["", f"{drv}  ({res['machine']['runtimes'][drv]})",
                  f"  {'case':<26}{'min ms':>8}  {'median ms':>9}  {'+drain med':>10}  "
                  f"{'vs host-bind':<13}vs host"]
        for cmd in COMMANDS:
            h = res["host"][cmd]["run"]
            b = res[drv][f"host-bind:{cmd}"]
            lines.append(f"  {'host-bind ' + cmd:<26}{b['run']['min_ms']:8.1f}  "
                         f"{b['run']['median_ms']:9.1f}  {b['run_drain']['median_ms']:10.1f}  "
                         f"{'1.00x':<13}{b['run']['median_ms'] / h['median_ms']:.1f}x")
            for image, c in IMAGE_CMD.items():
                if c != cmd:
                    continue
                d = res[drv][image]
                lines.append(f"  {'image ' + image:<26}{d['run']['min_ms']:8.1f}  "
                             f"{d['run']['median_ms']:9.1f}  "
                             f"{d['run_drain']['median_ms']:10.1f}  "
                             f"{format(d['ratio_vs_host_bind'], '.2f') + 'x':<13}"
                             f"{d['run']['median_ms'] / h['median_ms']:.1f}x")
    lines += ["", "host floor (no sandbox): " + ", ".join(
        f"{c} {res['host'][c]['run']['median_ms']:.1f} ms" for c in COMMANDS),
        "ratios compare medians of mgr.run (the caller's wait); +drain adds teardown."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--import-only" in argv:
        return import_main([a for a in argv if a != "--import-only"])
    args = bench_args(__doc__ or "", DEFAULT_JSON, 10, 5, argv)
    require_root()
    store = ImageStore(BENCH.images)
    built = {}
    for name in RECIPES:
        if not store.exists(name):
            print(f"building image {name} (once)...", file=sys.stderr)
            build_image(store, name)
        built[name] = store.get(name).digest

    mgr = SandboxManager(BENCH)
    cases: list[tuple[str, Case]] = [(f"host:{c}", host_case(c)) for c in COMMANDS]
    for drv in DRIVERS:
        mgr.driver(drv)
        cases += [(f"{drv}:host-bind:{c}", sandbox_case(mgr, drv, "host", c)) for c in COMMANDS]
        cases += [(f"{drv}:{i}", sandbox_case(mgr, drv, i, c)) for i, c in IMAGE_CMD.items()]
    samples: dict[str, dict[str, list[float]]] = {k: {} for k, _ in cases}
    t_start = time.monotonic()
    try:
        run_rounds(cases, args.runs, WARMUP, samples)
    finally:
        mgr.close()

    leaks: dict[str, Any] = footprint(BENCH)
    if mgr.reaper.errors:
        leaks["reaper_errors"] = list(mgr.reaper.errors)

    res: dict[str, Any] = {
        "benchmark": "images", "machine": machine_info(),
        "config": {"runs": args.runs, "warmup": WARMUP, "commands": COMMANDS,
                   "image_commands": IMAGE_CMD, "images": built,
                   "limits": LIMITS.to_dict(), "elapsed_s": round(time.monotonic() - t_start, 1)},
        "host": {c: {m: summary(v) for m, v in samples[f"host:{c}"].items()} for c in COMMANDS},
    }
    for drv in DRIVERS:
        d: dict[str, Any] = {}
        for key, s in samples.items():
            if key.startswith(drv + ":"):
                d[key.split(":", 1)[1]] = {m: summary(v) for m, v in s.items()}
        for image, c in IMAGE_CMD.items():
            d[image]["ratio_vs_host_bind"] = round(
                d[image]["run"]["median_ms"] / d[f"host-bind:{c}"]["run"]["median_ms"], 3)
        res[drv] = d
    code = write_report(res, args.json, render(res), leaks)
    if code == 0:
        shutil.rmtree(BENCH.state_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as e:
        print(f"images: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
