"""The gate's own overhead, with no sandbox in the way (the FakeDriver answers at once).

    sudo .venv/bin/python benchmarks/gate.py [--runs N] [--json PATH]

Measures, on SQLite in a temp data directory: one audit append (fsync'd line + head record),
a full audit verify per 1000 entries, submit of a high action (row + audit entry), and
submit -> approve -> completed of a medium code action end to end (two audit entries per
transition, compare-and-set updates). Writes JSON to benchmarks/results/gate.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
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
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-gate-"))
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
                        cgroup_parent="closedpaw-bench-gate")
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

            def round_trip() -> None:
                aid = orch.submit(ADMIN, req).id
                while not orch.get(aid).status.final:
                    time.sleep(0.0005)
                assert orch.get(aid).status is ActionStatus.COMPLETED
            out["medium_submit_to_completed"] = summary([timed(round_trip)[0]
                                                         for _ in range(args.runs)])
        finally:
            orch.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in out.items():
        print(f"{k:<28} median {v['median_ms']:8.2f} ms   min {v['min_ms']:8.2f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
