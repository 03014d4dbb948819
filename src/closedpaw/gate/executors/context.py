"""What an executor is handed: the services it may use, never the engine itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from closedpaw.errors import NotConfigured
from closedpaw.gate.executors.pools import WarmPools

if TYPE_CHECKING:
    from closedpaw.audit import AuditLog
    from closedpaw.gate.protect import Protected
    from closedpaw.sandbox import SandboxManager
    from closedpaw.settings import Settings
    from closedpaw.skills import SecretResolver as SkillSecrets
    from closedpaw.skills import SkillService
    from closedpaw.vault import Vault

__all__ = ["ExecutionContext", "SecretResolver", "secret_resolver_for"]

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
