"""A benchmark script's directory comes first on ``sys.path`` when it runs, so a script named
like a package the app imports (``mcp``, ``httpx``...) replaces that package for the whole
run: ``benchmarks/mcp.py`` once broke every benchmark that builds the app."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_no_benchmark_script_shadows_an_importable_module() -> None:
    shadowing = sorted(p.name for p in BENCH.glob("*.py")
                       if importlib.util.find_spec(p.stem) is not None)
    assert shadowing == [], f"rename these: {shadowing}"
