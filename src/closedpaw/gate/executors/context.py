"""What an executor is handed: the services it may use, never the engine itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from closedpaw.audit import AuditLog
    from closedpaw.gate.protect import Protected
    from closedpaw.sandbox import SandboxManager
    from closedpaw.settings import Settings
    from closedpaw.skills import SecretResolver, SkillService
    from closedpaw.vault import Vault

__all__ = ["ExecutionContext"]


def _no_role(name: str | None) -> str:
    return ""   # nobody: fail closed


@dataclass(frozen=True)
class ExecutionContext:
    """Built once by the gate (the composition root hands it the services).

    ``sandboxes`` returns the shared sandbox manager, built on first use. ``vault`` is the
    gate database's vault (locked until its key is given); ``role_of(name)`` is the role of
    an active principal ('' for none). ``providers`` and ``skills`` are None until those
    features exist and are configured; executors refuse with a clear message while a service
    they need is None (fail closed).
    """

    settings: Settings
    audit: AuditLog
    sandboxes: Callable[[], SandboxManager]
    providers: object | None = None
    vault: Vault | None = None
    skills: SkillService | None = None
    #: the secret-resolver hook for skills: name -> value, raising when it cannot. None = the
    #: skill executor resolves through the vault as the requester's role (or refuses when
    #: there is no vault).
    secrets: SecretResolver | None = None
    role_of: Callable[[str | None], str] = _no_role
    #: ClosedPaw's own state by device/inode: file executors check what they opened
    protected: Protected | None = None
