"""What an executor is handed: the services it may use, never the engine itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from closedpaw.errors import NotConfigured
from closedpaw.gate.executors.pools import WarmPools

if TYPE_CHECKING:
    from closedpaw.audit import AuditLog
    from closedpaw.sandbox import SandboxManager
    from closedpaw.settings import Settings

__all__ = ["ExecutionContext", "SecretResolver", "secret_resolver_for"]

#: ``NAME`` -> the secret's value; None when it is not set
SecretResolver = Callable[[str], "str | None"]


def secret_resolver_for(settings: Settings, vault: object | None = None) -> SecretResolver:
    """The resolver of ``secret:NAME`` references (provider API keys, ...).

    Without a vault: ``CLOSEDPAW_SECRET_<NAME>`` as read by :meth:`Settings.from_env` (NAME in
    capitals, ``-`` and ``.`` as ``_``). With a vault: its ``resolve(name)``; a vault without
    one fails closed (every lookup raises :class:`NotConfigured`), never the environment.
    """
    if vault is None:
        env = dict(settings.secret_env)

        def from_env(name: str) -> str | None:
            return env.get(name.upper().replace("-", "_").replace(".", "_")) or None
        return from_env
    resolve = getattr(vault, "resolve", None)
    if callable(resolve):
        def from_vault(name: str) -> str | None:
            got = resolve(name)
            return got if isinstance(got, str) else None
        return from_vault

    def refuse(name: str) -> str | None:
        raise NotConfigured(f"cannot resolve secret {name!r}: the configured vault "
                            f"({type(vault).__name__}) offers no resolve(name)")
    return refuse


@dataclass(frozen=True)
class ExecutionContext:
    """Built once by the gate (the composition root hands it the services).

    ``sandboxes`` returns the shared sandbox manager, built on first use. ``providers``,
    ``vault`` and ``skills`` are None until those features exist and are configured; their
    executors refuse with a clear message while they are None (fail closed). ``providers``
    is the chat service (see :class:`closedpaw.gate.executors.chat.ChatService`) the
    composition root (the app's lifespan) puts in. ``secret_resolver`` resolves
    ``secret:NAME`` (:func:`secret_resolver_for`); None refuses every name.
    """

    settings: Settings
    audit: AuditLog
    sandboxes: Callable[[], SandboxManager]
    providers: object | None = None
    vault: object | None = None
    skills: object | None = None
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
            where = ("the vault" if self.vault is not None else
                     f"CLOSEDPAW_SECRET_{name.upper().replace('-', '_').replace('.', '_')}")
            raise NotConfigured(f"secret {name!r} is not set (looked in {where})")
        return got
