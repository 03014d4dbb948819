"""``setting(default, env=...)``: a record field that declares its environment variable."""

from __future__ import annotations

from pathlib import Path

from closedpaw._record import Field, field
from closedpaw.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["ENV_PREFIX", "setting", "spec_of"]

ENV_PREFIX = "CLOSEDPAW_"


def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError("is not a boolean (1/0, true/false, yes/no)")
    return low in ("1", "true", "yes")


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ValueError("is not an integer") from None


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ValueError("is not a number") from None


PARSERS: dict[type, Callable[[str], Any]] = {
    str: str, Path: Path, int: _int, float: _float, bool: _bool}


def setting(default: Any, *, env: str, kind: type, doc: str,
            aliases: tuple[str, ...] = ()) -> Any:
    """A field with its environment variable ``env`` (read by the one loader as ``kind``);
    ``aliases`` are older names still accepted (the new name wins)."""
    return field(default=default, metadata={"env": env, "kind": kind, "doc": doc,
                                            "aliases": aliases})


def spec_of(f: Field) -> tuple[str, type, tuple[str, ...], str]:
    m = f.metadata
    return m["env"], m["kind"], m["aliases"], m["doc"]


def parse(name: str, kind: type, raw: str) -> Any:
    try:
        return PARSERS[kind](raw)
    except ValueError as e:
        raise ConfigError(f"{name}: {raw!r} {e}") from None
