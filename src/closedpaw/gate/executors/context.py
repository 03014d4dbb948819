"""What an executor is handed: the services it may use, never the engine itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from closedpaw.errors import NotConfigured
from closedpaw.gate.executors.pools import WarmPools
from closedpaw.gate.executors.session_store import SandboxSessions

if TYPE_CHECKING:
    from closedpaw.audit import AuditEvent, AuditLog
    from closedpaw.gate.protect import Protected
    from closedpaw.sandbox import SandboxManager
    from closedpaw.settings import Settings
    from closedpaw.skills import SecretResolver as SkillSecrets
    from closedpaw.skills import SkillService
    from closedpaw.vault import Vault

__all__ = ["AuditNotes", "ExecutionContext", "SecretResolver", "secret_resolver_for"]

#: ``NAME`` -> the secret's value; None when it is not set
SecretResolver = Callable[[str], "str | None"]


def secret_resolver_for(settings: Settings, vault: Vault | None = None) -> SecretResolver:
    """The resolver of ``secret:NAME`` references (provider API keys, ...).

    An initialized vault answers alone (read as ``system``; locked: :class:`VaultLocked`, so
    a key is never taken from elsewhere). Without one, ``CLOSEDPAW_SECRET_<NAME>`` as read by
    :meth:`Settings.from_env` (NAME in capitals, ``-`` and ``.`` as ``_``).
    """
    if vault is not None and vault.initialized:
        from closedpaw.errors import SecretNotFound

        resolve = vault.resolver("system")

        def from_vault(name: str) -> str | None:
            try:
                return resolve(name)
            except SecretNotFound:
                return None
        return from_vault
    env = dict(settings.secret_env)

    def from_env(name: str) -> str | None:
        return env.get(name.upper().replace("-", "_").replace(".", "_")) or None
    return from_env


class AuditNotes:
    """Audit entries an executor has to say about its action, written by the gate in the
    same durable write as the action's end (``completed``/``failed``): one fsync and one
    anchor move for both instead of two. Thread-safe; keyed by action id."""

    def __init__(self) -> None:
        self._notes: dict[str, list[tuple[AuditEvent, str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def add(self, action_id: str, event: AuditEvent, principal: str,
            details: dict[str, Any]) -> None:
        with self._lock:
            self._notes.setdefault(action_id, []).append((event, principal, details))

    def take(self, action_id: str) -> list[tuple[AuditEvent, str, dict[str, Any]]]:
        with self._lock:
            return self._notes.pop(action_id, [])


def _no_role(name: str | None) -> str:
    return ""   # nobody: fail closed


@dataclass(frozen=True)
class ExecutionContext:
    """Built once by the gate (the composition root hands it the services).

    ``sandboxes`` returns the shared sandbox manager, built on first use. ``vault`` is the
    gate database's vault (locked until its key is given); ``role_of(name)`` is the role of
    an active principal ('' for none). ``providers`` and ``skills`` are None until those
    features exist and are configured; executors refuse with a clear message while a service
    they need is None (fail closed). ``providers`` is the chat service (see
    :class:`closedpaw.gate.executors.chat.ChatService`) the composition root (the app's
    lifespan) puts in. ``secret_resolver`` resolves ``secret:NAME`` for providers
    (:func:`secret_resolver_for`); None refuses every name.
    """

    settings: Settings
    audit: AuditLog
    sandboxes: Callable[[], SandboxManager]
    providers: object | None = None
    #: the chat channels (closedpaw.channels.service.ChannelService), put in by the
    #: composition root like ``providers``; None: channel_message fails, and is high
    channels: object | None = None
    vault: Vault | None = None
    skills: SkillService | None = None
    #: the secret-resolver hook for skills: name -> value, raising when it cannot. None = the
    #: skill executor resolves through the vault as the requester's role (or refuses when
    #: there is no vault).
    secrets: SkillSecrets | None = None
    role_of: Callable[[str | None], str] = _no_role
    #: ClosedPaw's own state by device/inode: file executors check what they opened
    protected: Protected | None = None
    secret_resolver: SecretResolver | None = None
    #: warm sandboxes per execution policy for code_execution (closed by the gate)
    pools: WarmPools = field(default_factory=WarmPools)
    #: long-lived sandboxes of ``sandbox_session`` actions (closed by the gate)
    sessions: SandboxSessions = field(default_factory=SandboxSessions)
    #: entries written with the end of the action they are about
    notes: AuditNotes = field(default_factory=AuditNotes)

    def resolve_secret(self, name: str) -> str:
        """The secret's value, or :class:`NotConfigured` saying where it was looked for."""
        if self.secret_resolver is None:
            raise NotConfigured(f"cannot resolve secret {name!r}: no secret resolver is "
                                "configured")
        got = self.secret_resolver(name)
        if not got:
            where = ("the vault" if self.vault is not None and self.vault.initialized else
                     f"CLOSEDPAW_SECRET_{name.upper().replace('-', '_').replace('.', '_')}")
            raise NotConfigured(f"secret {name!r} is not set (looked in {where})")
        return got
