"""The channels of one server: built from the settings' channels file by the composition root
(the API app's lifespan, ``closedpaw serve``), each adapter imported only when a channel of its
type is configured, tokens resolved through the gate's secret resolver (the vault, else
``CLOSEDPAW_SECRET_<NAME>``). Also what the API's channel routes call: status, pairing requests,
approving a code, revoking a user.

A channel that fails to start (token refused, platform unreachable) is reported in its status
and the audit log; the others and the server keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent
from closedpaw.channels.base import Adapter, Identity
from closedpaw.channels.core import ChannelCore, fresh_principal
from closedpaw.channels.pairing import PairingStore
from closedpaw.errors import ChannelError, ClosedPawError, InvalidRequest, NotConfigured
from closedpaw.security.principal import Principal

if TYPE_CHECKING:
    from closedpaw.assistant import Assistant
    from closedpaw.gate import Gate
    from closedpaw.settings import ChannelConfig, Settings

__all__ = ["ADAPTERS", "ChannelService", "adapter_class"]

log = logging.getLogger("closedpaw.channels")

#: channel type -> "module:Class" of its adapter (imported only when configured)
ADAPTERS: dict[str, str] = {
    "telegram": "closedpaw.channels.telegram:TelegramAdapter",
    "slack": "closedpaw.channels.slack:SlackAdapter",
    "discord": "closedpaw.channels.discord:DiscordAdapter",
    "matrix": "closedpaw.channels.matrix:MatrixAdapter",
}


def adapter_class(kind: str) -> type[Adapter]:
    spec = ADAPTERS.get(kind)
    if spec is None:
        raise ChannelError(f"no adapter for channel type {kind!r}")
    mod, _, cls = spec.partition(":")
    try:
        found: type[Adapter] = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ChannelError(f"the {kind} adapter cannot be loaded ({e}); install the channel "
                           "libraries: scripts/install-deps.sh (or pip install "
                           "'closedpaw[channels]')") from None
    return found


class ChannelService:
    """Every configured channel of one server. ``adapters`` (name -> Adapter) replaces the
    built ones (tests hand in adapters pointed at their fake platform servers)."""

    def __init__(self, settings: Settings, gate: Gate, assistant: Assistant, *,
                 configs: list[ChannelConfig] | None = None,
                 adapters: dict[str, Adapter] | None = None,
                 pairing: PairingStore | None = None) -> None:
        self.settings = settings
        self.gate = gate
        self.assistant = assistant
        self.configs = configs if configs is not None else settings.channels.load()
        self.pairing = pairing or PairingStore(gate.store.engine)
        self.cores: dict[str, ChannelCore] = {}
        self.errors: dict[str, str] = {}
        self._given = adapters or {}

    def _secret(self, name: str) -> str:
        from closedpaw.gate.executors.context import secret_resolver_for

        resolve = secret_resolver_for(self.settings, self.gate.vault)
        try:
            value = resolve(name)
        except ClosedPawError as e:
            raise ChannelError(f"secret {name}: {e}") from None
        if not value:
            raise ChannelError(f"secret {name} is not set: store it with 'closedpaw secret set "
                               f"{name}' (or CLOSEDPAW_SECRET_{name.upper()} without a vault)")
        return value

    def _build(self, cfg: ChannelConfig) -> ChannelCore:
        adapter = self._given.get(cfg.name) or adapter_class(cfg.type).from_config(
            cfg, self._secret)
        return ChannelCore(cfg, adapter, gate=self.gate, assistant=self.assistant,
                           pairing=self.pairing, settings=self.settings.channels,
                           summary_period_s=self.settings.api.summary_period_s)

    async def start(self) -> None:
        """Start every enabled channel; one that fails is recorded in ``errors`` (and the
        log), the rest go on."""
        for cfg in self.configs:
            if not cfg.enabled:
                continue
            try:
                core = await asyncio.to_thread(self._build, cfg)
                await core.start()
            except Exception as e:   # one broken channel must not stop the server
                msg = " ".join(str(e).split())[:500] or type(e).__name__
                self.errors[cfg.name] = msg
                log.error("channel %s (%s) did not start: %s", cfg.name, cfg.type, msg)
                with contextlib.suppress(ClosedPawError):
                    await asyncio.to_thread(
                        self.gate.audit.append, AuditEvent.CHANNEL_STARTED,
                        principal="system", details={"channel": cfg.name, "type": cfg.type,
                                                     "error": msg})
                continue
            self.cores[cfg.name] = core

    async def stop(self) -> None:
        for core in list(self.cores.values()):
            try:
                await core.stop()
            except Exception:
                log.exception("channel %s did not stop cleanly", core.name)
        self.cores.clear()

    # -- what the API shows and does -------------------------------------------------------
    def channels(self) -> list[dict[str, Any]]:
        out = []
        for cfg in self.configs:
            core = self.cores.get(cfg.name)
            out.append({"name": cfg.name, "type": cfg.type, "enabled": cfg.enabled,
                        "running": bool(core and core.started),
                        "error": self.errors.get(cfg.name), "pairing": cfg.pairing,
                        "allowlisted": len(cfg.allow), "token": cfg.token})
        return out

    def status(self) -> list[dict[str, Any]]:
        out = []
        for item in self.channels():
            core = self.cores.get(item["name"])
            out.append(core.status() | {"enabled": item["enabled"], "token": item["token"]}
                       if core else item)
        return out

    def _config(self, name: str) -> ChannelConfig:
        for c in self.configs:
            if c.name == name:
                return c
        raise InvalidRequest(f"no channel named {name!r}")

    # -- the gate's channel_message action (gate.executors.channel.ChannelDelivery) ----------
    def _recipient(self, channel: str, recipient: str) -> tuple[ChannelCore, Identity] | None:
        core = self.cores.get(channel)
        if core is None:
            return None
        try:
            return core, Identity.from_key(core.platform, recipient)
        except ValueError:
            return None

    def owns(self, requester: str, channel: str, recipient: str) -> bool:
        """True when ``recipient`` on ``channel`` acts as principal ``requester``."""
        found = self._recipient(channel, recipient)
        if found is None:
            return False
        p = found[0].principal_of(found[1])
        return p is not None and p.name == requester

    def deliver(self, requester: str, channel: str, recipient: str, text: str
                ) -> dict[str, Any]:
        """Send an approved ``channel_message`` (called by the gate's executor, in a worker
        thread). Only to someone allowed on that channel (listed or paired): a bot never
        writes to strangers."""
        found = self._recipient(channel, recipient)
        if found is None:
            raise NotConfigured(f"no running channel {channel!r}, or {recipient!r} is not "
                                "an id there")
        core, who = found
        if core.principal_of(who) is None or core.loop is None:
            raise InvalidRequest(f"{recipient!r} is not allowed on channel {channel}: a "
                                 "message goes only to listed or paired people")
        fut = asyncio.run_coroutine_threadsafe(core.send_to(who, text), core.loop)
        try:
            parts = fut.result(timeout=300)
        except TimeoutError:
            fut.cancel()
            raise ChannelError(f"channel {channel}: the message was not sent in time") from None
        return {"channel": channel, "recipient": who.key, "messages": parts,
                "characters": len(text)}

    def pairings(self) -> dict[str, Any]:
        return {"pending": [r.to_dict() for r in self.pairing.pending()],
                "paired": [u.to_dict() for u in self.pairing.users()]}

    def approve_pairing(self, code: str, by: Principal) -> dict[str, Any]:
        """Bind the code's identity to a new ``user`` principal (admin only: the API route
        checks the role, and so does this)."""
        if not by.is_admin:
            from closedpaw.errors import PermissionDenied
            raise PermissionDenied("approving a pairing needs the admin role")

        def new_principal(channel: str, user_key: str) -> str:
            return fresh_principal(self.gate, channel, user_key, by)

        user = self.pairing.approve(code, by=by.name, principal_for=new_principal)
        self.gate.audit.append(AuditEvent.PAIRING_APPROVED, principal=by.name, details={
            "channel": user.channel, "user": user.user_key, "principal": user.principal,
            "role": "user"})
        return user.to_dict()

    def revoke_user(self, channel: str, user: str, by: Principal) -> dict[str, Any]:
        """Unbind a paired identity and disable its principal (admin only)."""
        if not by.is_admin:
            from closedpaw.errors import PermissionDenied
            raise PermissionDenied("revoking a channel user needs the admin role")
        cfg = self._config(channel)
        try:
            key = Identity.from_key(cfg.type, user).key
        except ValueError:
            raise InvalidRequest(f"user: {user!r} is not a {cfg.type} id") from None
        gone = self.pairing.revoke(channel, key)
        if gone is None:
            raise InvalidRequest(f"{user!r} is not paired on channel {channel} (people listed "
                                 "in the channels file are removed there)")
        with contextlib.suppress(ClosedPawError):
            self.gate.revoke_principal(gone.principal, by=by)
        self.gate.audit.append(AuditEvent.PAIRING_REVOKED, principal=by.name, details={
            "channel": channel, "user": key, "principal": gone.principal})
        return gone.to_dict()

