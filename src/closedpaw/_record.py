"""Frozen value classes that behave as frozen dataclasses without importing ``dataclasses``.

``closedpaw run`` is a one-shot process: everything it imports is paid on every run. The
``dataclasses`` module brings ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``), and
each ``@dataclass`` compiles five or six methods from source when its class is created: on the
run path's ~35 classes that was about half of our own import time. A :class:`Record` subclass
is declared like a frozen dataclass::

    class Limits(Record):
        cpu: float = 1.0
        env: Mapping[str, str] = field(default_factory=dict, repr=False)

        def __post_init__(self) -> None: ...

and behaves like ``@dataclass(frozen=True)``: the same ``__init__`` (positional or keyword,
defaults, factories, ``__post_init__``), ``__repr__``, ``__eq__`` (same class only),
``__hash__`` over the compared fields, ``__match_args__``, and assigning or deleting an
attribute raises ``dataclasses.FrozenInstanceError``. Its methods are shared ones of this
base class that walk the field names, so creating a class compiles nothing.

For everything else it IS a dataclass, built on first use: ``dataclasses.fields``,
``replace``, ``asdict``, ``is_dataclass``, a dataclass subclassing a record, and
``inspect.signature`` read ``__dataclass_fields__``, ``__dataclass_params__`` and
``__signature__``, which a record computes (importing ``dataclasses`` then, never before) by
applying ``@dataclass(frozen=True)`` to a twin class of the same declarations. A test checks
that every record in the package matches its twin. :func:`replace`, :func:`field_names` and
:func:`values` do the common things without importing ``dataclasses`` at all.

Type checkers see ``Record`` as a ``dataclass_transform`` base (frozen by default), so
they check constructors and ``dataclasses.replace`` as for a dataclass.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, ClassVar, TypeVar

    from typing_extensions import dataclass_transform

    _R = TypeVar("_R", bound="Record")
else:
    def dataclass_transform(**_: object) -> object:
        return lambda cls: cls

__all__ = ["Field", "Record", "field", "field_names", "fields_of", "replace", "values"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field of a record: its name, annotation (a string) and declaration."""

    __slots__ = ("compare", "default", "default_factory", "metadata", "name", "repr", "type")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 repr: bool = True, compare: bool = True,
                 metadata: Mapping[str, Any] | None = None) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare
        self.metadata: Mapping[str, Any] = {} if metadata is None else metadata

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, repr={self.repr}, "
                f"compare={self.compare}, metadata={self.metadata!r})")


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          repr: bool = True, compare: bool = True,
          metadata: Mapping[str, Any] | None = None) -> Any:
    """A field declaration, as ``dataclasses.field`` (the subset records use)."""
    return Field(default, default_factory, repr, compare, metadata)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "ClassVar" in text and text.replace(" ", "").startswith(
        ("ClassVar", "typing.ClassVar", "t.ClassVar"))


class _Meta:
    """What a record class knows of its fields (one object per class: setting attributes on
    a class is what costs when it is created)."""

    __slots__ = ("cmp", "defaults", "factories", "fields", "lazy", "names", "own", "post",
                 "repr")

    def __init__(self, cls: type[Record]) -> None:
        fields: dict[str, Field] = {}
        for base in cls.__mro__[-1:0:-1]:
            meta = base.__dict__.get("_record_")
            if meta is not None:
                fields.update(meta.fields)
        own: list[Field] = []
        # the class's own annotations, as dataclasses reads them (inspect is not loaded)
        ns = cls.__dict__
        for name, ann in ns.get("__annotations__", {}).items():
            if _is_classvar(ann):
                continue
            value = ns.get(name, MISSING)
            if value.__class__ is Field:
                f = value
                if f.default is MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, f.default)
            else:
                f = Field(default=value)
            f.name, f.type = name, ann
            if f.default is not MISSING and f.default.__class__.__hash__ is None:
                raise ValueError(f"mutable default {type(f.default)} for field {name} is not "
                                 "allowed: use default_factory")
            fields[name] = f
            own.append(f)
        seen_default = False
        for f in fields.values():
            has = f.default is not MISSING or f.default_factory is not MISSING
            if seen_default and not has:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            seen_default = seen_default or has
        self.fields = fields
        self.own = tuple(own)
        self.names = tuple(fields)
        self.repr = tuple(n for n, f in fields.items() if f.repr)
        self.cmp = tuple(n for n, f in fields.items() if f.compare)
        self.defaults = {n: f.default for n, f in fields.items() if f.default is not MISSING}
        self.factories = {n: f.default_factory for n, f in fields.items()
                          if f.default_factory is not MISSING}
        self.post: Callable[[Any], None] | None = getattr(cls, "__post_init__", None)
        self.lazy: dict[str, Any] = {}


class _PerClass:
    """A class attribute of :class:`Record` whose value belongs to each record class:
    ``__match_args__`` (the field names), and ``__dataclass_fields__``,
    ``__dataclass_params__`` and ``__signature__``, computed from the class's dataclass twin
    on first access. ``Record`` itself has none of them (it is not a dataclass)."""

    __slots__ = ("attr",)

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __get__(self, obj: object, cls: type[Record]) -> Any:
        meta = cls.__dict__.get("_record_")
        if meta is None:
            raise AttributeError(self.attr)
        if self.attr == "__match_args__":
            return meta.names
        value = meta.lazy.get(self.attr)
        if value is None:
            twin = _twin(cls)
            if self.attr == "__signature__":
                import inspect

                value = inspect.signature(twin)
            else:
                value = getattr(twin, self.attr)
            meta.lazy[self.attr] = value
        return value


def _twin(cls: type[Record]) -> type:
    """``cls``'s declarations as a real frozen dataclass (made once per class)."""
    meta: _Meta = cls.__dict__["_record_"]
    twin = meta.lazy.get("twin")
    if twin is not None:
        return twin  # type: ignore[no-any-return]
    import dataclasses

    bases = tuple(_twin(b) for b in cls.__bases__ if "_record_" in b.__dict__)
    ns: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                          "__doc__": cls.__doc__,
                          "__annotations__": {f.name: f.type for f in meta.own}}
    for f in meta.own:
        kw: dict[str, Any] = {"repr": f.repr, "compare": f.compare}
        if f.metadata:
            kw["metadata"] = f.metadata
        if f.default is not MISSING:
            kw["default"] = f.default
        if f.default_factory is not MISSING:
            kw["default_factory"] = f.default_factory
        ns[f.name] = dataclasses.field(**kw)
    twin = dataclasses.dataclass(frozen=True)(type(cls.__name__, bases, ns))
    meta.lazy["twin"] = twin
    return twin


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
class Record:
    """Base of frozen value classes; see the module docstring."""

    __slots__ = ()
    if TYPE_CHECKING:
        _record_: ClassVar[_Meta]
    else:  # type checkers see what dataclass_transform gives each record
        __match_args__ = _PerClass("__match_args__")
        __dataclass_fields__ = _PerClass("__dataclass_fields__")
        __dataclass_params__ = _PerClass("__dataclass_params__")
        __signature__ = _PerClass("__signature__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._record_ = _Meta(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = self.__class__
        meta = cls._record_
        names = meta.names
        if len(args) > len(names):
            most = len(names) + 1
            least = most - len(meta.defaults) - len(meta.factories)
            takes = f"from {least} to {most}" if least < most else str(most)
            raise TypeError(f"{cls.__qualname__}.__init__() takes {takes} positional "
                            f"argument{'s' if most > 1 else ''} but {len(args) + 1} were given")
        given = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k in given:
                raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for "
                                f"argument {k!r}")
            given[k] = v
        d = self.__dict__
        missing = []
        defaults, factories = meta.defaults, meta.factories
        for n in names:
            if n in given:
                d[n] = given.pop(n)
            elif n in defaults:
                d[n] = defaults[n]
            elif n in factories:
                d[n] = factories[n]()
            else:
                missing.append(n)
        if given:
            raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword "
                            f"argument {next(iter(given))!r}")
        if missing:
            quoted = [repr(m) for m in missing]
            what = quoted[0] if len(quoted) == 1 else \
                f"{', '.join(quoted[:-1])} and {quoted[-1]}"
            raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required "
                            f"positional argument{'s' if len(missing) > 1 else ''}: {what}")
        if meta.post is not None:
            meta.post(self)

    def __repr__(self) -> str:
        d = self.__dict__
        inner = ", ".join(f"{n}={d[n]!r}" for n in self._record_.repr)
        return f"{self.__class__.__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        a, b, names = self.__dict__, other.__dict__, self._record_.cmp
        return tuple(a[n] for n in names) == tuple(b[n] for n in names)

    def __hash__(self) -> int:
        d = self.__dict__
        return hash(tuple(d[n] for n in self._record_.cmp))

    def __setattr__(self, name: str, value: Any) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")


def fields_of(cls_or_obj: Record | type[Record]) -> tuple[Field, ...]:
    """The record's fields in order (as ``dataclasses.fields``, without importing it)."""
    return tuple(cls_or_obj._record_.fields.values())


def field_names(cls_or_obj: Record | type[Record]) -> tuple[str, ...]:
    return cls_or_obj._record_.names


def values(obj: Record) -> dict[str, Any]:
    """Field name -> value, in order; shallow (``dataclasses.asdict`` also converts nested
    dataclasses and copies containers)."""
    d = obj.__dict__
    return {n: d[n] for n in obj._record_.names}


def replace(obj: _R, /, **changes: Any) -> _R:
    """A copy of ``obj`` with some fields changed, validated again (``dataclasses.replace``)."""
    d = obj.__dict__
    for n in obj._record_.names:
        if n not in changes:
            changes[n] = d[n]
    return obj.__class__(**changes)
