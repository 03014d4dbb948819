"""The layout of ``closedpaw.sandbox``: its parts import only parts below them (counting imports
under ``TYPE_CHECKING`` and inside functions), the lifecycle children never reach into the
manager, the public surface is what ``__all__`` says, and the one-shot path (``closedpaw
run``) imports none of the long-lived machinery."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import closedpaw.sandbox as sandbox
from tests.conftest import python_stdout

SANDBOX = Path(sandbox.__file__).resolve().parent
SRC = SANDBOX.parents[1]
REPO = SANDBOX.parents[2]

# Each part of sandbox/ may import parts of a LOWER rank only (and itself).
RANK = {
    "result": 0, "spec": 0,
    "bundle": 1, "policy": 1, "drivers": 1, "images": 1,
    "host": 2,
    "agent": 3,
    "lifecycle": 4,
    "doctor": 5,
}


def _imports(src: Path, path: Path) -> set[str]:
    """Every closedpaw.sandbox module ``path`` imports, wherever the import statement is
    (top level, under TYPE_CHECKING, inside a function)."""
    mod = ".".join(path.relative_to(src).with_suffix("").parts)
    out: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                base = ".".join(mod.split(".")[: -n.level] + ([base] if base else []))
            out.update(f"{base}.{a.name}" for a in n.names)
    return {m for m in out if m.startswith("closedpaw.sandbox.")}


def _module_of(src: Path, name: str) -> str:
    """``a.b.c`` of ``from a.b import c``: the module, whether ``c`` is one or an attribute."""
    while name and not ((src / (name.replace(".", "/") + ".py")).exists()
                        or (src / name.replace(".", "/")).is_dir()):
        name = name.rpartition(".")[0]
    return name


def _edges(src: Path) -> dict[str, set[str]]:
    """closedpaw.sandbox module -> the closedpaw.sandbox modules it imports (package
    ``__init__`` files and the in-sandbox agent's own code left out)."""
    edges: dict[str, set[str]] = {}
    for path in sorted((src / "closedpaw" / "sandbox").rglob("*.py")):
        if "inside" in path.parts or path.name == "__init__.py":
            continue
        mod = ".".join(path.relative_to(src).with_suffix("").parts)
        targets = {_module_of(src, t) for t in _imports(src, path)}
        edges[mod] = {t for t in targets if t.count(".") >= 2 and t != mod}
    return edges


def _part(module: str) -> str:
    return module.split(".")[2]


def _violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(edges.items()):
        for t in sorted(targets):
            a, b = _part(mod), _part(t)
            if a != b and RANK.get(b, 99) >= RANK.get(a, -1):
                bad.append(f"{mod} imports {t} ({a} is not above {b})")
    return bad


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str]:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t):], t]
            if t not in state and (c := visit(t, [*path, t])):
                return c
        state[m] = 2
        return []

    for m in sorted(edges):
        if m not in state and (c := visit(m, [m])):
            return c
    return []


def test_every_part_imports_only_lower_parts() -> None:
    bad = _violations(_edges(SRC))
    assert not bad, "\n".join(bad)


def test_rank_table_names_every_part() -> None:
    parts = {p.stem if p.is_file() else p.name for p in SANDBOX.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py")
             or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts == set(RANK)


def test_no_import_cycle_in_the_sandbox() -> None:
    assert _cycle(_edges(SRC)) == []


def test_the_checks_catch_hidden_upward_imports_and_cycles(tmp_path: Path) -> None:
    """A deliberate violation: host/ importing lifecycle/ under TYPE_CHECKING and agent/
    inside a function, and lifecycle importing host back, is reported by both checks."""
    pkg = tmp_path / "closedpaw" / "sandbox"
    for d in ("host", "lifecycle", "agent"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "host" / "statedir.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from closedpaw.sandbox.lifecycle.manager import SandboxManager
        def f():
            from closedpaw.sandbox.agent import stream
    """))
    (pkg / "lifecycle" / "manager.py").write_text(
        "from closedpaw.sandbox.host.statedir import f\n")
    (pkg / "agent" / "stream.py").write_text("")
    edges = _edges(tmp_path)
    assert edges["closedpaw.sandbox.host.statedir"] == {
        "closedpaw.sandbox.lifecycle.manager", "closedpaw.sandbox.agent.stream"}
    bad = _violations(edges)
    assert len(bad) == 2 and all(b.startswith("closedpaw.sandbox.host.statedir") for b in bad)
    assert _cycle(edges) == ["closedpaw.sandbox.host.statedir",
                             "closedpaw.sandbox.lifecycle.manager",
                             "closedpaw.sandbox.host.statedir"]


def test_lifecycle_children_get_the_registry_not_the_manager() -> None:
    for name in ("sandbox", "pool", "snapshot", "registry"):
        path = SANDBOX / "lifecycle" / f"{name}.py"
        assert not any(m.startswith("closedpaw.sandbox.lifecycle.manager")
                       for m in _imports(SRC, path)), name
        text = path.read_text()
        assert not re.search(r"\bmanager\._", text), f"{name} calls the manager's privates"
    for private in ("_forget", "_forget_pool", "_track_snapshot", "_forget_snapshot"):
        assert not re.search(rf"\bdef {private}\(", (SANDBOX / "lifecycle" / "manager.py")
                             .read_text()), private


def test_workspace_means_only_the_users_file_area() -> None:
    for path in SANDBOX.rglob("*.py"):
        assert not re.search(r"\bWorkspace\b", path.read_text()), path


# -- the public surface ------------------------------------------------------------------------

# What README and the issue show users: engine, long-lived sandboxes, pools, snapshots, streams,
# results and specs, policies, images and the one-call form.
SHOWN = {
    "SandboxManager", "Sandbox", "SandboxStatus", "SandboxInfo", "SandboxPool", "PoolStats",
    "Snapshot", "ExecStream", "ExecutionResult", "CodeResult", "CodeError", "Isolation",
    "ResourceUsage", "SkippedFile", "ExecRequest", "ResourceLimits", "SandboxSpec",
    "ExecutionPolicy", "load_policies", "ImageStore", "GcReport", "run", "default_manager",
}


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = sandbox.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        obj = getattr(sandbox, name)
        assert obj is not None
        if isinstance(obj, type) or inspect.isfunction(obj):  # ours, not a re-export
            assert obj.__module__.startswith("closedpaw.sandbox"), name


def test_all_holds_what_users_are_shown() -> None:
    missing = SHOWN - set(sandbox.__all__)
    assert not missing, f"not exported by closedpaw.sandbox: {sorted(missing)}"


def test_names_imported_in_the_docs_are_exported() -> None:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    used: set[str] = set()
    for doc in docs:
        if not doc.exists():
            continue
        text = doc.read_text()
        for m in re.finditer(r"from closedpaw\.sandbox import (?:\(([^)]*)\)|([^\n]+))", text):
            names = (m.group(1) or m.group(2)).replace("\n", ",").split(",")
            used.update(n.strip() for n in names if n.strip())
        used.update(re.findall(r"closedpaw\.sandbox\.(\w+)\(", text))
    assert used, "the docs import nothing from closedpaw.sandbox: the check would pass vacuously"
    missing = used - set(sandbox.__all__)
    assert not missing, f"the docs use {sorted(missing)}, which closedpaw.sandbox does not export"


def test_nothing_public_hides_outside_all() -> None:
    """Every public class or function reachable on the package is listed in ``__all__``."""
    for name in dir(sandbox):
        if name.startswith("_"):
            continue
        obj = getattr(sandbox, name)
        if getattr(obj, "__module__", "").startswith("closedpaw.sandbox") and (
                isinstance(obj, type) or callable(obj)):
            assert name in sandbox.__all__, f"closedpaw.sandbox.{name} is public but not in __all__"


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = sandbox.NoSuchThing  # type: ignore[attr-defined]


# -- the one-shot path ---------------------------------------------------------------------

# `closedpaw run` builds a spec, a manager and runs one sandbox; none of these may load.
NOT_ON_THE_ONE_SHOT_PATH = (
    "asyncio", "concurrent.futures", "closedpaw.sandbox.agent", "closedpaw.sandbox.agent.channel",
    "closedpaw.sandbox.agent.stream", "closedpaw.sandbox.lifecycle.sandbox",
    "closedpaw.sandbox.lifecycle.pool", "closedpaw.sandbox.lifecycle.snapshot",
    "closedpaw.sandbox.host.reconcile", "closedpaw.sandbox.host.inventory",
    "closedpaw.sandbox.policy", "pydantic", "httpx", "yaml", "rich", "fastapi", "sqlalchemy",
    # the image store and the overlay are for store images; the host image needs neither
    # (nor tempfile, secrets, OpenSSL's hashlib, or shutil with its bz2 and lzma)
    "closedpaw.sandbox.images.store", "closedpaw.sandbox.images.overlay",
    "closedpaw.sandbox.images.limits", "tempfile", "secrets", "hashlib", "_hashlib", "shutil",
    "bz2", "lzma",
    # the run path's value classes are records (closedpaw._record), not dataclasses, and it
    # imports typing only for type checkers: dataclasses would bring inspect, ast, dis and
    # tokenize, and make ~35 classes compile their methods at import
    "dataclasses", "inspect", "ast", "dis", "tokenize", "typing",
    # a deferred reaper (the CLI's) has no worker queue; a run without files in or out
    # needs no file copying
    "queue", "closedpaw.sandbox.host.files",
    # `closedpaw run` builds only its own parser: no other command module loads
    *(f"closedpaw.cli.{name}" for name in ("system", "policy", "images", "gate", "actions",
                                             "chat", "skills", "mcp", "vault", "screen")),
)

ONE_SHOT = """
import sys
from pathlib import Path
import closedpaw.cli.main as m
spec = m._spec(m.build_parser("run").parse_args(["run", "--", "true"]), None)
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.host.reaper import Reaper
from closedpaw.sandbox.drivers import detect, runc, runsc  # the real drivers' imports too
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.settings import Settings
d = Path(sys.argv[1])
mgr = SandboxManager(Settings.of(state_dir=d / "s", data_dir=d / "d"), driver=FakeDriver(),
                     reaper=Reaper(deferred=True))
r = mgr.run(["echo", "hi"], spec)
loaded = ",".join(sorted(sys.modules))  # teardown is the detached child's work in the CLI
mgr.reaper.drain()
assert r.exit_code == 0 and r.stdout == b"hi\\n", r
print(loaded)
"""


def test_the_one_shot_path_loads_no_long_lived_machinery(tmp_path: Path) -> None:
    """The CLI's ``run`` path, through a whole one-shot on the FakeDriver (the same code as a
    real run up to the driver call; teardown is handed to a detached child), loads neither
    asyncio nor the agent, pools, snapshots, gc, the image store, the other commands or any
    of the heavy libraries. The host skeleton is built beforehand, as on every run but the
    first."""
    from closedpaw.sandbox.images.host import prepare_host_rootfs

    prepare_host_rootfs(tmp_path / "d")
    p = subprocess.run([sys.executable, "-c", ONE_SHOT, str(tmp_path)], capture_output=True,
                       text=True, check=False)
    assert p.returncode == 0, p.stderr
    loaded = set(p.stdout.strip().split(","))
    assert "closedpaw.sandbox.lifecycle.manager" in loaded  # the probe did run the path
    assert "closedpaw.sandbox.images.host" in loaded        # and built the host skeleton
    bad = sorted(loaded & set(NOT_ON_THE_ONE_SHOT_PATH))
    assert not bad, f"loaded on the one-shot path: {bad}"


def test_a_store_image_does_load_the_store() -> None:
    """The guard above is not vacuous for the image store: a run on a store image needs it,
    and the package still offers it by name."""
    code = ("import sys\n"
            "from closedpaw.sandbox.images import HOST_IMAGE, ImageStore, Image\n"
            "from closedpaw.sandbox.images.store import HOST_IMAGE as H\n"
            "assert H == HOST_IMAGE == 'host'\n"
            "print(','.join(k for k in ('closedpaw.sandbox.images.store', 'tempfile') "
            "if k in sys.modules))")
    out = python_stdout(code)
    assert out == "closedpaw.sandbox.images.store,tempfile"
    with pytest.raises(AttributeError):
        import closedpaw.sandbox.images as images

        _ = images.NoSuchThing  # type: ignore[attr-defined]


def test_the_long_lived_path_does_load_the_agent() -> None:
    """The guard above is not vacuous: creating long-lived sandboxes needs what it forbids."""
    code = ("import sys; from closedpaw.sandbox import Sandbox, SandboxPool\n"
            "print(','.join(k for k in ('asyncio', 'closedpaw.sandbox.agent.channel') "
            "if k in sys.modules))")
    out = python_stdout(code)
    assert out == "asyncio,closedpaw.sandbox.agent.channel"


def test_the_host_skeleton_is_named_by_sha256() -> None:
    """The skeleton's digest uses the interpreter's built-in SHA-256 (no OpenSSL on the
    one-shot path); it must be the very hash hashlib gives, or every host would rebuild."""
    import hashlib

    from closedpaw.sandbox.images import host

    for data in (b"", b"abc", bytes(range(256)) * 300):
        assert host.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
