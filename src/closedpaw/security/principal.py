"""Who is acting."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROLES", "SYSTEM", "Principal"]

ROLES = ("admin", "approver", "user")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or ``system`` for the gate's own transitions)."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def sees_all(self) -> bool:
        """admin and approver see (and decide on) every principal's actions; a user only its
        own."""
        return self.role in ("admin", "approver")


SYSTEM = Principal("system", "system")
