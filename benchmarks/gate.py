"""The gate's own overhead, with no sandbox in the way (the FakeDriver answers at once),
and a real 'closedpaw serve' under floods.

    sudo .venv/bin/python benchmarks/gate.py [--runs N] [--json PATH] [--no-flood]

Measures, on SQLite in a temp data directory: one audit append (fsync'd line + head record),
a full audit verify per 1000 entries, submit of a high action (row + audit entry), and
submit -> approve -> completed of a medium code action end to end (two audit entries per
transition, compare-and-set updates).

Then, against a 'closedpaw serve' process on 127.0.0.1 (issue 13): the server's RSS under an
unauthenticated flood of 8 MiB bodies (floor: its RSS at rest), audit entries written per
1,000 refused (unauthenticated) requests (floor: 0), and the latency of a submission by a
'user' token during an unauthenticated flood (floor: the same with no flood), each printed
with its floor and the ratio. Writes JSON to benchmarks/results/gate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, summary, timed

from closedpaw.audit import AuditEvent, AuditLog
from closedpaw.gate import ActionRequest, ActionStatus, Gate
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.security import Principal
from closedpaw.settings import Settings

DEFAULT_JSON = REPO / "benchmarks" / "results" / "gate.json"
ADMIN = Principal("bench", "admin")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--no-flood", action="store_true", help="skip the server floods")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-gate-"))
    tmp.chmod(0o711)   # searchable: sandboxes get their own user namespace, as in use
    out: dict[str, Any] = {}
    try:
        log = AuditLog(tmp / "audit-only")
        out["audit_append"] = summary([timed(lambda: log.append(
            AuditEvent.SERVER_STARTED, principal="bench", details={"x": 1}))[0]
            for _ in range(args.runs)])
        for _ in range(1000 - args.runs):
            log.append(AuditEvent.SERVER_STARTED, principal="bench")
        out["audit_verify_1000"] = summary([timed(log.verify)[0] for _ in range(5)])

        s = Settings.of(data_dir=tmp / "data", state_dir=tmp / "state",
                        cgroup_parent="closedpaw-bench-gate",
                        max_pending_per_principal=100_000,
                        max_pending_bytes_per_principal=1 << 30)
        orch = Gate(s, manager=SandboxManager(s, driver=FakeDriver()))
        orch.start()
        try:
            req = ActionRequest(action_type="code_execution",
                                parameters={"argv": ["echo", "hi"]})
            high = ActionRequest(action_type="code_execution",
                                 parameters={"argv": ["echo", "hi"]},
                                 min_level="high")  # type: ignore[arg-type]
            out["submit_high"] = summary([timed(lambda: orch.submit(ADMIN, high))[0]
                                          for _ in range(args.runs)])

            def round_trip() -> None:   # polling get() as a naive client would
                aid = orch.submit(ADMIN, req).id
                while not orch.get(aid).status.final:
                    time.sleep(0.0005)
                assert orch.get(aid).status is ActionStatus.COMPLETED
            out["medium_submit_to_completed"] = summary([timed(round_trip)[0]
                                                         for _ in range(args.runs)])

            # told by the gate's own event, as the API's event stream and the assistant are
            # (the polling loop above holds the GIL the worker needs, every 0.5 ms)
            ended = threading.Event()
            want: list[str] = []

            def hear(ev: dict[str, Any]) -> None:
                if want and ev["action_id"] == want[0] and ev["status"] in ("completed",
                                                                             "failed"):
                    ended.set()
            off = orch.subscribe(hear)

            def heard_trip() -> None:
                ended.clear()
                want.clear()
                rec = orch.submit(ADMIN, req)
                want.append(rec.id)
                if not orch.get(rec.id).status.final:   # (ended before want was set)
                    ended.wait(10)
                assert orch.get(rec.id).status is ActionStatus.COMPLETED
            try:
                out["medium_submit_to_completed_event"] = summary(
                    [timed(heard_trip)[0] for _ in range(args.runs)])
            finally:
                off()
        finally:
            orch.close()
        if not args.no_flood:
            out["floods"] = floods(tmp / "served", args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in out.items():
        if k != "floods":
            print(f"{k:<28} median {v['median_ms']:8.2f} ms   min {v['min_ms']:8.2f} ms")
    for k, v in out.get("floods", {}).items():
        print(f"{k:<40} {v['result']:>10} {v['unit']:<8} floor {v['floor']:>10} "
              f"ratio {v['ratio']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


# -- floods against a real server ---------------------------------------------------------
CLI = str(Path(sys.executable).with_name("closedpaw"))
MIB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def _server(tmp: Path) -> Iterator[tuple[int, int, Path, str]]:
    import httpx

    data = tmp / "data"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(tmp / "state"),
           "CLOSEDPAW_CGROUP_PARENT": "closedpaw-bench-gate",
           "CLOSEDPAW_SUMMARY_PERIOD_S": "1", "CLOSEDPAW_MAX_PENDING_PER_PRINCIPAL": "100000",
           "CLOSEDPAW_MAX_PENDING_BYTES_PER_PRINCIPAL": str(1 << 30)}
    r = subprocess.run([CLI, "token", "create", "--name", "bench", "--role", "user",
                        "--data-dir", str(data)], capture_output=True, text=True, env=env,
                       timeout=60, check=True)
    token = r.stdout.strip()
    with socket.socket() as k:
        k.bind(("127.0.0.1", 0))
        port = k.getsockname()[1]
    log = open(tmp / "serve.log", "w")  # noqa: SIM115
    p = subprocess.Popen([CLI, "serve", "--port", str(port), "--data-dir", str(data)], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/health",
                             trust_env=False).status_code == 200:
                    break
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "serve.log").read_text())
            time.sleep(0.1)
        yield port, p.pid, data, token
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def _unauth_post(port: int, size: int) -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                 timeout=20) as s:
        s.sendall(b"POST /api/actions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                  + str(size).encode() + b"\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            s.sendall(chunk)
        s.recv(4096)


def _entry(result: float, floor: float, unit: str, **more: Any) -> dict[str, Any]:
    ratio = round(result / floor, 2) if floor else None
    return {"result": round(result, 2), "floor": round(floor, 2), "ratio": ratio, "unit": unit,
            **more}


def floods(tmp: Path, runs: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with _server(tmp) as (port, pid, data, token):
        url = f"http://127.0.0.1:{port}"
        body = {"action_type": "code_execution", "min_level": "high",
                "parameters": {"language": "python", "code": "print(1)"}}
        with httpx.Client(base_url=url, trust_env=False, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            def submit_ms() -> float:
                t0 = time.perf_counter()
                c.post("/api/actions", json=body).raise_for_status()
                return (time.perf_counter() - t0) * 1000

            for _ in range(5):
                submit_ms()   # warm up
            floor = summary([submit_ms() for _ in range(runs)])

            # memory under an unauthenticated flood: 16 concurrent 8 MiB bodies, 4 rounds
            rest = _rss(pid)
            peak = rest
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, _rss(pid))
                    time.sleep(0.02)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            for _ in range(4):
                ts = [threading.Thread(target=_unauth_post, args=(port, 8 * MIB))
                      for _ in range(16)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
            took = time.perf_counter() - t0
            stop.set()
            sampler.join()
            out["rss_unauthenticated_8MiB_flood_MiB"] = _entry(
                peak / MIB, rest / MIB, "MiB", offered_MiB=4 * 16 * 8, seconds=round(took, 2))

            # audit entries per 1,000 refused requests
            audit = data / "audit" / "audit.jsonl"
            time.sleep(1.2)   # the summary of the previous flood is out
            before = len(audit.read_text().splitlines())
            with httpx.Client(base_url=url, trust_env=False, timeout=30) as anon:
                for i in range(1000):
                    anon.get("/api/status", headers={"Authorization": f"Bearer x{i}"})
            time.sleep(2.2)   # one summary period and a bit
            grown = len(audit.read_text().splitlines()) - before
            out["audit_entries_per_1000_refused"] = _entry(grown, 0, "entries")

            # submission latency during a flood (2 threads of unauthenticated requests)
            stop = threading.Event()
            sent = [0]

            def flood() -> None:
                with httpx.Client(base_url=url, trust_env=False, timeout=30) as anon:
                    while not stop.is_set():
                        anon.get("/api/status", headers={"Authorization": "Bearer nope"})
                        sent[0] += 1
            fl = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
            for t in fl:
                t.start()
            time.sleep(0.5)
            during = summary([submit_ms() for _ in range(runs)])
            stop.set()
            for t in fl:
                t.join()
            out["submit_latency_during_flood_ms"] = _entry(
                during["median_ms"], floor["median_ms"], "ms (median)",
                p_max_ms=during["max_ms"], floor_max_ms=floor["max_ms"],
                flood_requests=sent[0])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
