"""Who is acting."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROLES", "SYSTEM", "Principal"]

ROLES = ("admin", "user")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or ``system`` for the gate's own transitions)."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


SYSTEM = Principal("system", "system")
