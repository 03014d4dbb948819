"""Gates on the shape of the code: the layer table, no import cycles, the public surface, the
error tree with its stable codes.

The table below is the one in docs/architecture.md. Every ``import`` counts: at module level,
under ``if TYPE_CHECKING:``, inside functions, relative ones, and ``importlib.import_module``
with a literal name (a dependency hidden there is still a dependency).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import closedpaw
import closedpaw.api as api
import closedpaw.audit as audit
import closedpaw.channels as channels
import closedpaw.cli.main as main_mod
import closedpaw.client as client
import closedpaw.errors as errors
import closedpaw.gate as gate
import closedpaw.sandbox as sandbox
import closedpaw.screening as screening
import closedpaw.security as security
import closedpaw.vault as vault
from tests.conftest import python_stdout

SRC = Path(closedpaw.__file__).parent
L0, L1, L2, L3, L4, L5 = range(6)


@dataclass(frozen=True)
class Row:
    layer: int
    #: packages of the same or a higher layer this one may import anyway
    also: frozenset[str] = frozenset()
    #: module prefixes it may never import, whatever its layer allows
    never: frozenset[str] = frozenset()
    #: single modules of another package it may import (a narrow exception)
    modules: frozenset[str] = field(default=frozenset())


def _r(layer: int, also: Iterable[str] = (), never: Iterable[str] = (),
       modules: Iterable[str] = ()) -> Row:
    return Row(layer, frozenset(also), frozenset(never), frozenset(modules))


# package (or top-level module) -> its row; rows exist before the packages do
LAYERS: dict[str, Row] = {
    "errors": _r(L0), "settings": _r(L0, also={"errors", "_record"}),
    # frozen value classes that are dataclasses to callers without importing dataclasses
    "_record": _r(L0),
    # private key files (create once 0600, refuse wider modes): audit, gate and vault share it
    "keyfile": _r(L0),
    "audit": _r(L1), "security": _r(L1), "vault": _r(L1),
    "sandbox": _r(L2), "providers": _r(L2), "screening": _r(L2),
    "skills": _r(L2, also={"sandbox"}),
    "gate": _r(L3),
    # every tool call of the assistant is a gate action: it never reaches around the gate
    "assistant": _r(L4, never={"closedpaw.sandbox", "closedpaw.vault",
                                "closedpaw.gate.executors"}),
    # the HTTP client every front end may share; it knows the wire, not the server
    "client": _r(L0 + 1, never={"closedpaw.audit", "closedpaw.security", "closedpaw.vault"}),
    # front ends: never each other; they share client.py, and 'closedpaw serve' starts the
    # app factory (api.server), the one composition root
    # ... and starts the configured chat channels in its lifespan (channels.service), whose
    # pairing routes it serves
    "api": _r(L5, also={"web", "mcp", "channels"}),
    "web": _r(L5, also={"client"}),
    # chat platforms: in-process with the assistant and the gate (L0-L4) inside 'closedpaw
    # serve'; never api/web/mcp/cli (api starts them through channels.service)
    "channels": _r(L5, also={"client"}),
    "mcp": _r(L5, also={"client"}),
    "cli": _r(L5, also={"client"}, modules={"closedpaw.api.server", "closedpaw.mcp.server"}),
    # the package root: the curated public surface (kept cheap by test_cli_start_is_lazy)
    "__init__": _r(L3),
}


def allowed_packages(pkg: str) -> set[str]:
    row = LAYERS[pkg]
    below = {p for p, r in LAYERS.items() if r.layer < row.layer and p != "__init__"}
    return (below | row.also | {pkg}) - {p.split(".")[1] for p in row.never
                                         if p.count(".") == 1}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module name ``path`` imports, relative imports resolved, wherever they are."""
    me = module_name(path, root)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[:len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
        elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")) \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    return {m for m in out if m == root.name or m.startswith(root.name + ".")}


def _known(name: str, modules: set[str]) -> str:
    """``pkg.mod.Name`` -> ``pkg.mod`` (the longest prefix that is a module below the root);
    a name with no such prefix is returned as it is (a module that does not exist yet)."""
    found = name
    while found.count(".") >= 1 and found not in modules:
        found = found.rpartition(".")[0]
    return found if found.count(".") >= 1 else name


def layer_violations(root: Path) -> list[str]:
    """One line per import that breaks :data:`LAYERS` under the package ``root``."""
    bad = []
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        top = "__init__" if rel == Path("__init__.py") else rel.parts[0].removesuffix(".py")
        if top not in LAYERS:
            bad.append(f"{rel}: {top} has no row in the layer table")
            continue
        row, ok = LAYERS[top], allowed_packages(top)
        for target in sorted({_known(i, modules) for i in imports_of(path, root)}):
            parts = target.split(".")
            if len(parts) < 2:
                continue  # 'import closedpaw' itself
            if any(target == n or target.startswith(n + ".") for n in row.never):
                bad.append(f"{rel} imports {target}: {top} may never import it")
            elif parts[1] not in ok and not any(
                    target == m or target.startswith(m + ".") for m in row.modules):
                bad.append(f"{rel} imports {target}: {top} (L{row.layer}) may import only "
                           f"{', '.join(sorted(ok - {top})) or 'nothing of ours'}")
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected groups of modules (package ``__init__`` files left out, as they
    re-export what their modules define) that import each other, directly or not."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    inits = {m for m, p in paths.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for m, p in paths.items():
        if m in inits:
            continue
        targets = {_known(i, set(paths)) for i in imports_of(p, root)}
        graph[m] = {t for t in targets if t in paths and t != m and t not in inits}
    # Tarjan's algorithm, iterative (no recursion limit on a deep tree)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


# -- the gates ------------------------------------------------------------------------------
def test_every_import_respects_the_layer_table() -> None:
    bad = layer_violations(SRC)
    assert not bad, "\n".join(bad)


def test_no_import_cycle_anywhere_in_src() -> None:
    cycles = import_cycles(SRC)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_table_has_rows_for_the_packages_still_to_come() -> None:
    for pkg in ("providers", "screening", "vault", "assistant", "web", "channels", "skills",
                "mcp", "client"):
        assert pkg in LAYERS
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for pkg in LAYERS:
        if pkg != "__init__":
            assert f"`{pkg}" in doc, f"docs/architecture.md does not place {pkg}"


# -- the checker itself, on synthetic trees -----------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "closedpaw"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


CLEAN = {"__init__.py": "", "errors.py": "", "sandbox/__init__.py": "",
         "sandbox/run.py": "from closedpaw.errors import X\n", "gate/__init__.py": "",
         "gate/engine.py": "from closedpaw.sandbox.run import run\n",
         "gate/executors/__init__.py": "", "gate/executors/code.py": "from ..engine import E\n",
         "assistant/__init__.py": "", "assistant/loop.py": "from closedpaw.gate import Gate\n",
         "cli/__init__.py": "", "cli/main.py": "def f():\n    import closedpaw.client\n",
         "client.py": "import closedpaw.errors\n"}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    assert layer_violations(root) == [] and import_cycles(root) == []


@pytest.mark.parametrize(("rel", "text", "needle"), [
    # a lower layer importing a higher one, hidden under TYPE_CHECKING
    ("sandbox/run.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from closedpaw.gate.engine import Gate\n", "sandbox/run.py imports closedpaw.gate"),
    # ... inside a function
    ("errors.py", "def f():\n    import closedpaw.sandbox.run\n", "errors.py imports"),
    # ... through importlib
    ("sandbox/run.py", "import importlib\nimportlib.import_module('closedpaw.cli.main')\n",
     "closedpaw.cli.main"),
    # a relative import reaching up a layer
    ("sandbox/run.py", "from ..gate import engine\n", "closedpaw.gate"),
    # the assistant reaching around the gate
    ("assistant/loop.py", "from closedpaw.gate.executors.code import run\n",
     "assistant may never import it"),
    ("assistant/loop.py", "def f():\n    from closedpaw.sandbox import run\n",
     "assistant may never import it"),
    # front ends importing each other
    ("cli/main.py", "from closedpaw.api.app import create_app\n", "cli/main.py imports"),
    # a package nobody placed
    ("robots.py", "", "robots has no row"),
])
def test_checker_catches_a_deliberate_violation(tmp_path: Path, rel: str, text: str,
                                                needle: str) -> None:
    root = _tree(tmp_path, {**CLEAN, rel: text})
    found = layer_violations(root)
    assert any(needle in line for line in found), found


def test_checker_catches_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "sandbox/a.py": "from closedpaw.sandbox.b import B\n",
                            "sandbox/b.py": "def f():\n    from . import c\n",
                            "sandbox/c.py": "from typing import TYPE_CHECKING\n"
                            "if TYPE_CHECKING:\n    from closedpaw.sandbox.a import A\n"})
    assert import_cycles(root) == [["closedpaw.sandbox.a", "closedpaw.sandbox.b",
                                    "closedpaw.sandbox.c"]]


# -- the public surface and the error tree -------------------------------------------------
@pytest.mark.parametrize("mod", [closedpaw, sandbox, errors, audit, gate, security, api,
                                 client, vault, screening, channels])
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


def test_every_error_class_has_its_own_stable_unique_code() -> None:
    classes = [getattr(errors, n) for n in errors.__all__]
    for cls in classes:
        assert "code" in vars(cls), f"{cls.__name__} inherits its code; give it its own"
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", cls.code), cls.code
    codes = [c.code for c in classes]
    dup = sorted({c for c in codes if codes.count(c) > 1})
    assert not dup, f"codes used twice: {dup}"
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    missing = [c for c in codes if f"`{c}`" not in doc]
    assert not missing, f"docs/architecture.md does not list codes {missing}"


def test_cli_start_is_lazy() -> None:
    heavy = ("closedpaw.sandbox.lifecycle.manager", "pydantic", "subprocess", "fastapi",
             "sqlalchemy", "yaml", "httpx", "uvicorn", "closedpaw.gate", "closedpaw.api",
             "closedpaw.client")
    code = ("import sys, closedpaw.cli.main as m; m.build_parser(); "
            f"print(','.join(k for k in {heavy!r} if k in sys.modules))")
    out = python_stdout(code)
    assert out == "", f"imported at CLI start: {out}"


def test_run_builds_only_its_own_parser() -> None:
    """``closedpaw run ...`` loads no other command module (their parsers are not built)."""
    others = [f"closedpaw.cli.{n}" for n in main_mod.COMMAND_MODULES]
    code = ("import sys, contextlib, io, closedpaw.cli.main as m\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    m.main(['run', '--help'])\n"
            f"print(','.join(k for k in {others!r} if k in sys.modules))")
    out = python_stdout(code)
    assert out == "", f"loaded by closedpaw run: {out}"


@pytest.mark.parametrize("argv", [
    ["run", "--", "python3", "-c", "pass"],
    ["run", "--runtime", "runc", "--memory", "64m", "--env", "A=1", "--env", "B=2", "--json",
     "--", "sh", "-c", "echo $A"],
    ["run", "--lang", "python", "-c", "print(1)", "--", "x", "--y"],
    ["run", "--image", "node", "--pids", "8", "--timeout", "1.5", "--", "node"],
])
def test_the_run_parser_alone_parses_as_the_whole_one(argv: list[str]) -> None:
    whole = vars(main_mod.build_parser().parse_args(argv))
    alone = vars(main_mod.build_parser("run").parse_args(argv))
    assert alone == whole


@pytest.mark.parametrize("argv", [
    ["run", "--runtime", "docker", "--", "true"], ["run", "--cpus", "many", "--", "true"],
    ["run", "--no-such-flag"], ["run", "--pids"],
])
def test_the_run_parser_alone_refuses_as_the_whole_one(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    errors = []
    for command in (None, "run"):
        with pytest.raises(SystemExit) as e:
            main_mod.build_parser(command).parse_args(argv)
        errors.append((e.value.code, capsys.readouterr().err))
    assert errors[0] == errors[1]
    assert errors[0][0] == 2 and errors[0][1].startswith("closedpaw: error: ")


def test_the_run_help_is_the_same_alone(capsys: pytest.CaptureFixture[str]) -> None:
    helps = []
    for command in (None, "run"):
        with pytest.raises(SystemExit):
            main_mod.build_parser(command).parse_args(["run", "--help"])
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and "--runtime" in helps[0]


def test_settings_import_is_cheap() -> None:
    code = ("import sys, closedpaw.settings; "
            "print(','.join(k for k in ('pydantic', 'yaml', 'asyncio', 'httpx') "
            "if k in sys.modules))")
    out = python_stdout(code)
    assert out == "", f"imported with closedpaw.settings: {out}"


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
            "import closedpaw.sandbox.host.statedir, closedpaw.sandbox.lifecycle.manager\n"
            "print(','.join(k for k in ('yaml', 'rich') if k in sys.modules))")
    out = python_stdout(code)
    assert out == "", f"imported on the run path: {out}"


def test_cli_choice_lists_match_their_owners() -> None:
    from closedpaw.cli import images, util
    from closedpaw.sandbox.images.store import HOST_IMAGE
    from closedpaw.sandbox.policy import LANGUAGES
    from closedpaw.security.principal import ROLES
    from closedpaw.settings import RUNTIME_CHOICES

    assert util.RUNTIME_CHOICES == RUNTIME_CHOICES
    assert set(util.LANG_CHOICES) == set(LANGUAGES)
    assert set(util.ROLE_CHOICES) == set(ROLES)
    assert images.HOST_IMAGE == HOST_IMAGE
    from closedpaw.cli.vault import LEVELS
    from closedpaw.vault import Level

    assert tuple(lv.value for lv in Level) == LEVELS


def test_the_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "closedpaw.cli.main", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out == f"closedpaw {version('closedpaw')}\n"
