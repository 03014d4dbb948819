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

__all__ = ["ExecutionContext"]


@dataclass(frozen=True)
class ExecutionContext:
    """Built once by the gate (the composition root hands it the services).

    ``sandboxes`` returns the shared sandbox manager, built on first use. ``providers``,
    ``vault`` and ``skills`` are None until those features exist and are configured; their
    executors refuse with a clear message while they are None (fail closed).
    """

    settings: Settings
    audit: AuditLog
    sandboxes: Callable[[], SandboxManager]
    providers: object | None = None
    vault: object | None = None
    skills: object | None = None
    #: ClosedPaw's own state by device/inode: file executors check what they opened
    protected: Protected | None = None
