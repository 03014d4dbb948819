"""``closedpaw._record.Record``: frozen value classes that behave as frozen dataclasses.

Each behaviour is checked against a real ``@dataclass(frozen=True)`` with the same
declarations (the twin), and every record of the package against the dataclass that
``dataclasses`` makes of it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import closedpaw
from closedpaw._record import Record, field, field_names, fields_of, replace, values
from tests.conftest import python_stdout

SRC = Path(closedpaw.__file__).parent


class Point(Record):
    """A record with a required field, a default, a factory and a hidden field."""

    x: int
    y: str = "a"
    tags: Mapping[str, int] = field(default_factory=dict, compare=False)
    secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x: negative")
        object.__setattr__(self, "y", self.y.strip())


class Point3(Point):
    z: float = 0.0


@dataclasses.dataclass(frozen=True)
class Twin:
    """``Point``'s declarations as a real dataclass (same qualname in messages below)."""

    x: int
    y: str = "a"
    tags: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)
    secret: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x: negative")
        object.__setattr__(self, "y", self.y.strip())


def _same(rec: Any, twin: Any) -> None:
    assert repr(rec).replace("Point", "Twin") == repr(twin)
    assert values(rec) == dataclasses.asdict(twin) == dataclasses.asdict(rec)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1,), {}), ((1, " b "), {}), ((), {"x": 2, "secret": "s"}),
    ((3,), {"tags": {"k": 1}, "y": "c"}),
])
def test_construction_repr_and_values_match_the_dataclass(args: tuple[Any, ...],
                                                          kwargs: dict[str, Any]) -> None:
    _same(Point(*args, **kwargs), Twin(*args, **kwargs))


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}), ((1, "b", {}, "s", "extra"), {}), ((1,), {"x": 1}), ((1,), {"nope": 1}),
    ((), {"y": "b"}),
])
def test_wrong_arguments_raise_the_dataclass_type_errors(args: tuple[Any, ...],
                                                         kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError) as ours:
        Point(*args, **kwargs)
    with pytest.raises(TypeError) as theirs:
        Twin(*args, **kwargs)
    assert str(ours.value).replace("Point", "Twin") == str(theirs.value)


def test_post_init_validates_and_normalises() -> None:
    with pytest.raises(ValueError, match="negative"):
        Point(-1)
    assert Point(1, "  padded ").y == "padded"


def test_equality_and_hash_use_the_compared_fields_of_the_same_class_only() -> None:
    assert Point(1, tags={"a": 1}) == Point(1, tags={"b": 2})  # tags: compare=False
    assert hash(Point(1, tags={"a": 1})) == hash(Point(1))
    assert Point(1) != Point(2) and Point(1) != Point3(1) and Point(1) != Twin(1)
    nan = float("nan")
    assert Point3(1, z=nan) == Point3(1, z=nan)   # the same object: tuple equality, as dataclasses
    assert {Point(1), Point(1)} == {Point(1)}


def test_frozen() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert p.x == 1


def test_inheritance_adds_fields_after_the_bases() -> None:
    p = Point3(1, "b", {}, "s", 2.5)
    assert field_names(p) == ("x", "y", "tags", "secret", "z")
    assert repr(p) == "Point3(x=1, y='b', tags={}, z=2.5)"
    assert Point3.__match_args__ == ("x", "y", "tags", "secret", "z")
    match p:
        case Point3(x, y):
            assert (x, y) == (1, "b")


def test_replace_ours_and_dataclasses_validate_again() -> None:
    p = Point(1, "b", secret="s")
    assert replace(p, x=5) == dataclasses.replace(p, x=5) == Point(5, "b", secret="s")
    assert replace(p, x=5).secret == "s"
    with pytest.raises(ValueError, match="negative"):
        replace(p, x=-1)
    with pytest.raises(ValueError, match="negative"):
        dataclasses.replace(p, x=-1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        replace(p, nope=1)


def test_it_is_a_dataclass_to_dataclasses_and_inspect() -> None:
    assert dataclasses.is_dataclass(Point) and dataclasses.is_dataclass(Point(1))
    assert not dataclasses.is_dataclass(Record)
    ours = [(f.name, f.type, f.default, f.default_factory, f.repr, f.compare)
            for f in dataclasses.fields(Point3)]
    twin = [(f.name, f.type, f.default, f.default_factory, f.repr, f.compare)
            for f in dataclasses.fields(Twin)]
    assert ours[:4] == twin and ours[4][:3] == ("z", "float", 0.0)
    assert dataclasses.fields(Point(1)) == dataclasses.fields(Point)
    assert Point.__dataclass_params__.frozen
    assert str(inspect.signature(Point)) == str(inspect.signature(Twin))


def test_a_dataclass_may_subclass_a_record() -> None:
    @dataclasses.dataclass(frozen=True)
    class Sub(Point):
        w: int = 7

    s = Sub(1, w=3)
    assert (s.x, s.y, s.w) == (1, "a", 3) and repr(s).endswith("Sub(x=1, y='a', tags={}, w=3)")
    with pytest.raises(ValueError, match="negative"):
        Sub(-1)   # the record's __post_init__ still runs


def test_pickle_and_copy() -> None:
    p = Point3(1, "b", {"k": 1}, "s", 2.0)
    for q in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert q == p and q.tags == {"k": 1} and q.secret == "s"


def test_declaration_errors_match_dataclasses() -> None:
    with pytest.raises(ValueError, match="mutable default"):
        class Bad(Record):
            xs: list[int] = []
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        class Bad2(Record):
            a: int = 1
            b: int  # type: ignore[misc]
    with pytest.raises(ValueError, match="both default and default_factory"):
        field(default=1, default_factory=int)


def _records() -> list[type[Record]]:
    for path in sorted(SRC.rglob("*.py")):
        if "inside" in path.parts:
            continue
        mod = ".".join(("closedpaw", *path.relative_to(SRC).with_suffix("").parts))
        importlib.import_module(mod.removesuffix(".__init__"))
    out, todo = [], list(Record.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("closedpaw."):
            out.append(cls)
        todo += cls.__subclasses__()
    return sorted(out, key=lambda c: (c.__module__, c.__qualname__))


RECORDS = _records()


def test_the_package_uses_records() -> None:
    names = {c.__qualname__ for c in RECORDS}
    assert {"Settings", "SandboxSettings", "SandboxSpec", "ResourceLimits", "ExecutionResult",
            "CodeResult", "Isolation", "DriverFeatures"} <= names


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_record_of_the_package_matches_the_dataclass_made_of_it(cls: type[Record]) -> None:
    ours = [(f.name, f.type, f.default, f.default_factory, f.repr, f.compare,
             dict(f.metadata)) for f in fields_of(cls)]
    missing = dataclasses.MISSING
    theirs = [(f.name, f.type, f.default, f.default_factory, f.repr, f.compare,
               dict(f.metadata)) for f in dataclasses.fields(cls)]
    norm = [tuple(missing if repr(v) == "MISSING" else v for v in row) for row in ours]
    assert norm == theirs
    assert str(inspect.signature(cls)).startswith("(")


@pytest.mark.parametrize("name", ["Settings", "SandboxSpec", "ResourceLimits", "ExecRequest",
                                  "ExecutionResult", "CodeResult", "Isolation",
                                  "ResourceUsage", "SkippedFile", "CodeError"])
def test_the_public_records_type_hints_resolve(name: str) -> None:
    """typing.get_type_hints works on the public types, though their modules import typing
    names for type checkers only."""
    import typing

    import closedpaw.sandbox as sb

    cls = getattr(closedpaw, name, None) or getattr(sb, name)
    hints = typing.get_type_hints(cls)
    assert set(field_names(cls)) <= set(hints)


def test_the_one_shot_path_imports_neither_dataclasses_nor_typing() -> None:
    """What ``closedpaw run`` loads (the parser, a spec built from the flags, the settings,
    the manager and the reaper) needs no dataclasses, inspect or typing: records and
    ``TYPE_CHECKING = False`` keep them off the path. ``dataclasses.replace`` still works on
    the same objects (and loads dataclasses then)."""
    code = (
        "import sys\n"
        "import closedpaw.cli.main as m\n"
        "spec = m._spec(m.build_parser('run').parse_args(['run', '--memory', '64m', '--env',"
        " 'A=1', '--', 'true']), None)\n"
        "import closedpaw.sandbox.lifecycle.manager, closedpaw.sandbox.host.reaper\n"
        "from closedpaw.sandbox.drivers import detect, runc, runsc, fake\n"
        "from closedpaw.settings import Settings\n"
        "s = Settings.from_env()\n"
        "bad = [k for k in ('dataclasses', 'inspect', 'ast', 'dis', 'tokenize', 'typing')"
        " if k in sys.modules]\n"
        "import dataclasses\n"
        "assert dataclasses.replace(spec, workdir='/w').limits.memory_mb == 64\n"
        "print(','.join(bad))\n")
    out = python_stdout(code)
    assert out == "", f"loaded on the one-shot path: {out}"
