"""Schemathesis against the live OpenAPI schema: no generated request may cause a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from closedpaw.gate import Gate
from tests.integration.conftest import fake_manager, gate_settings, live_server, python_handler

ST = str(Path(sys.executable).with_name("st"))


def test_no_server_errors_under_fuzzing(tmp_path: Path) -> None:
    s = gate_settings(tmp_path, rate_limit_per_minute=1_000_000)
    orch = Gate(s, manager=fake_manager(s, python_handler))
    try:
        with live_server(s, orch) as live:
            r = subprocess.run(
                [ST, "run", f"{live.url}/openapi.json", "--checks", "not_a_server_error",
                 "-H", f"Authorization: Bearer {live.token}", "--max-examples", "15",
                 "--phases", "examples,coverage,fuzzing",
                 # endless streams by design: the gate's events, a conversation's events
                 "--exclude-path-regex", r"^/api/(conversations/[^/]+/)?events$",
                 "--request-timeout", "20", "--seed", "4", "--no-shrink",
                 "--max-time", "40"],   # fuzzing runs to its time budget
                capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                     "SCHEMATHESIS_HOOKS": ""})
            out = r.stdout + r.stderr
            assert r.returncode == 0, out[-6000:]
            assert "No issues found" in out
    finally:
        orch.close()
