"""Gates on the shape of the code: the dependency rule, the public surface, the error tree."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import closedpaw
import closedpaw.api as api
import closedpaw.audit as audit
import closedpaw.errors as errors
import closedpaw.orchestrator as orchestrator
import closedpaw.sandbox as sandbox
import closedpaw.security as security

SRC = Path(closedpaw.__file__).parent

# package -> the closedpaw packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "sandbox": {"errors", "settings"},
    "errors": set(),
    "settings": {"errors"},
    "audit": {"errors", "settings"},
    "security": {"errors", "settings"},
    "orchestrator": {"sandbox", "audit", "security", "errors", "settings"},
    "api": {"orchestrator", "sandbox", "audit", "security", "errors", "settings"},
    # the CLI starts the API server ('closedpaw serve') and otherwise talks to it over HTTP
    "cli": {"api", "orchestrator", "sandbox", "audit", "security", "errors", "settings"},
}
# issue 14: providers (L2) and the assistant (L4: the gate and providers, never sandbox)
ALLOWED["providers"] = {"errors", "settings", "audit", "security"}
ALLOWED["assistant"] = {"orchestrator", "providers", "audit", "security", "errors", "settings"}
ALLOWED["api"] |= {"assistant", "providers"}
ALLOWED["cli"] |= {"assistant", "providers"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m.split(".")[1] for m in out if m.startswith("closedpaw.") and m.count(".") >= 1}


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_dependencies_point_one_way(path: Path) -> None:
    rel = path.relative_to(SRC)
    top = rel.parts[0].removesuffix(".py")
    if top == "__init__":
        return
    allowed = ALLOWED.get(top)
    assert allowed is not None, f"{top} has no entry in the dependency rule"
    bad = _imports(path) - allowed - {top}
    assert not bad, f"{rel} imports {bad}; allowed: {allowed}"


@pytest.mark.parametrize("mod", [closedpaw, sandbox, errors, audit, orchestrator, security, api])
def test_public_names_resolve(mod: object) -> None:
    names = mod.__all__  # type: ignore[attr-defined]
    assert names == sorted(names) or mod is closedpaw
    for name in names:
        assert getattr(mod, name) is not None


def test_one_exception_tree_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ClosedPawError)
        assert name in doc, f"{name} missing from the tree in errors.py's docstring"


def test_cli_start_is_lazy() -> None:
    heavy = ("closedpaw.sandbox.manager", "pydantic", "subprocess", "fastapi", "sqlalchemy",
             "yaml", "httpx", "uvicorn", "closedpaw.orchestrator", "closedpaw.api")
    code = ("import sys, closedpaw.cli.main as m; m.build_parser(); "
            f"print(','.join(k for k in {heavy!r} if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"imported at CLI start: {out}"


def test_every_module_imports() -> None:
    for path in SRC.rglob("*.py"):
        mod = "closedpaw." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        importlib.import_module(mod.removesuffix(".__init__"))


def test_plain_and_image_runs_do_not_load_yaml_or_rich() -> None:
    """YAML and rich are for policies, builds and tables; `closedpaw run` (also with --image)
    builds its spec without them."""
    code = ("import sys, closedpaw.cli.main as m\n"
            "for argv in (['run', '--', 'true'], ['run', '--image', 'node', '--', 'node']):\n"
            "    m._spec(m.build_parser().parse_args(argv), None)\n"
            "import closedpaw.sandbox.workspace, closedpaw.sandbox.manager\n"
            "print(','.join(k for k in ('yaml', 'rich') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"imported on the run path: {out}"
