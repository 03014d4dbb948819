"""Secret levels and which roles may read them.

A level is fixed when a secret is stored; a reader never names one. ``may_read(role, level)``
is the single table: ``user`` principals read ``public``, ``standard`` and ``elevated``
secrets (an ``elevated`` read also needs an admin's approval, see
:func:`needs_admin_approval`), ``admin`` reads everything, anything else reads only
``public``. ``system`` (the gate's own wiring, e.g. a provider's API key) reads up to
``elevated``, never ``admin``.
"""

from __future__ import annotations

from enum import StrEnum

from closedpaw.errors import InvalidRequest

__all__ = ["Level", "may_read", "needs_admin_approval", "parse_level"]


class Level(StrEnum):
    PUBLIC = "public"
    STANDARD = "standard"
    ELEVATED = "elevated"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Level.PUBLIC: 0, Level.STANDARD: 1, Level.ELEVATED: 2, Level.ADMIN: 3}

#: role -> the highest level it may read
_CEILING = {"admin": Level.ADMIN, "system": Level.ELEVATED, "user": Level.ELEVATED}


def parse_level(value: str) -> Level:
    try:
        return Level(value)
    except ValueError:
        raise InvalidRequest(f"level: {value!r} is not one of "
                             f"{', '.join(lv.value for lv in Level)}") from None


def may_read(role: str, level: Level) -> bool:
    ceiling = _CEILING.get(role, Level.PUBLIC)
    return level.rank <= ceiling.rank


def needs_admin_approval(level: Level) -> bool:
    """A read of an ``elevated`` or ``admin`` secret is critical: only an admin approves it."""
    return level.rank >= Level.ELEVATED.rank
