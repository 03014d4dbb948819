"""Settings: the only reader of ``CLOSEDPAW_*`` environment variables.

:class:`Settings` holds the two directories every layer shares and one section per concern
(``sandbox``, ``pools``, ``gate``, ``api``, ``vault``, ``providers``, ``channels``; web gets
its own when it lands: one frozen record in ``sections.py`` and one field below). Every field
declares its environment variable beside it (``CLOSEDPAW_`` + the field name in capitals).

Precedence, highest first: an explicit argument to a call (``mgr.run(runtime=...)``) > a
:class:`Settings` object passed in (then the environment is not read at all) > the
``CLOSEDPAW_*`` environment, read by the one loader :meth:`Settings.from_env` > the defaults.

Build one from code with :meth:`Settings.of` (flat field names, defaults for the rest) or
change one with :meth:`Settings.with_`; both route each name to its section. Importing this
package stays cheap (pathlib, and no ``dataclasses`` nor ``typing``: the sections are
:class:`~closedpaw._record.Record` classes, frozen dataclasses to every caller, that cost
nothing to define): the CLI's one-shot path imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping  # at run time: typing.get_type_hints(Settings) resolves
from pathlib import Path

from closedpaw._record import Field, Record, field, fields_of, replace
from closedpaw.errors import ConfigError
from closedpaw.settings._field import parse, setting, spec_of
from closedpaw.settings.channels import AllowEntry, ChannelConfig, ChannelSettings
from closedpaw.settings.sections import (
    RUNTIME_CHOICES,
    ApiSettings,
    GateSettings,
    ImageSettings,
    McpSettings,
    PoolSettings,
    ProviderSettings,
    SandboxSettings,
    SkillSettings,
    VaultSettings,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RUNTIME_CHOICES", "SECRET_ENV_PREFIX", "AllowEntry", "ApiSettings",
           "ChannelConfig", "ChannelSettings", "GateSettings",
           "ImageSettings", "McpSettings", "PoolSettings", "ProviderSettings", "SandboxSettings",
           "Settings", "SkillSettings", "VaultSettings", "all_settings"]

#: ``secret:NAME`` resolves from ``CLOSEDPAW_SECRET_<NAME>`` while no vault is initialized
SECRET_ENV_PREFIX = "CLOSEDPAW_SECRET_"

#: the section fields of :class:`Settings`, in order
SECTIONS: dict[str, type[Record]] = {"sandbox": SandboxSettings, "image_import": ImageSettings,
                             "pools": PoolSettings, "gate": GateSettings, "api": ApiSettings,
                             "skills": SkillSettings, "vault": VaultSettings,
                             "providers": ProviderSettings, "mcp": McpSettings,
                             "channels": ChannelSettings}
#: top-level fields that are not settings of their own (no env name)
_NOT_SETTINGS = frozenset({"secret_env"})


class Settings(Record):
    """Process-wide configuration.

    ``state_dir`` holds per-sandbox bundles and runtime state (a tmpfs such as /run is best);
    ``data_dir`` holds durable data: the prepared host root filesystem and probe cache, the
    image store, the database, the audit log, the API token.
    """

    state_dir: Path = setting(Path("/run/closedpaw"), env="CLOSEDPAW_STATE_DIR", kind=Path,
                              doc="per-sandbox bundles and runtime state (tmpfs)")
    data_dir: Path = setting(Path("/var/lib/closedpaw"), env="CLOSEDPAW_DATA_DIR", kind=Path,
                             doc="durable data: host rootfs, probe cache, images, database, "
                             "audit log, API token")
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    image_import: ImageSettings = field(default_factory=ImageSettings)
    pools: PoolSettings = field(default_factory=PoolSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    skills: SkillSettings = field(default_factory=SkillSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    mcp: McpSettings = field(default_factory=McpSettings)
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    #: the ``CLOSEDPAW_SECRET_<NAME>`` variables :meth:`from_env` saw (name -> value); the
    #: secret resolver reads them while no vault is initialized. Never printed.
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # -- derived paths (one place that decides where things live) -------------------------
    @property
    def database_url(self) -> str:
        return self.gate.db_url or f"sqlite:///{self.data_dir / 'closedpaw.db'}"

    @property
    def rules_path(self) -> Path:
        return self.gate.rules_file or self.data_dir / "rules.yaml"

    @property
    def workspace_path(self) -> Path:
        return self.gate.workspace_dir or self.data_dir / "workspace"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api-token"

    @property
    def api_base_url(self) -> str:
        if self.api.api_url:
            return self.api.api_url.rstrip("/")
        host = self.api.api_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.api.api_port}"

    @property
    def skills_path(self) -> Path:
        return self.skills.skills_dir or self.data_dir / "skills"

    @property
    def images(self) -> Path:
        """The image store directory."""
        d = self.sandbox.image_dir
        return d if d is not None else self.data_dir / "images"

    @property
    def snapshots(self) -> Path:
        """The directory of checkpoint images."""
        d = self.pools.snapshot_dir
        return d if d is not None else self.state_dir / "snapshots"

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """THE loader: ``CLOSEDPAW_*`` variables over the defaults, ``overrides`` (flat field
        names; None = not given) over both. An empty variable counts as unset."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for _section, f in all_settings():
            name, kind, aliases, _ = spec_of(f)
            for var in (name, *aliases):  # the current name wins over an older one
                raw = env.get(var)
                if raw:
                    values[f.name] = parse(var, kind, raw)
                    break
        values.update({k: v for k, v in overrides.items() if v is not None})
        secrets = {k[len(SECRET_ENV_PREFIX):]: v for k, v in env.items()
                   if k.startswith(SECRET_ENV_PREFIX) and len(k) > len(SECRET_ENV_PREFIX) and v}
        return replace(cls.of(**values), secret_env=secrets)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Defaults with some fields set by their flat names (``Settings.of(max_sandboxes=3,
        data_dir=...)``); nothing is read from the environment."""
        return cls().with_(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed by their flat names (validated again)."""
        where = {f.name: section for section, f in all_settings()}
        top: dict[str, Any] = {}
        per: dict[str, dict[str, Any]] = {}
        for k, v in changes.items():
            if k not in where:
                raise ConfigError(f"{k}: unknown setting")
            section = where[k]
            if section is None:
                top[k] = v
            else:
                per.setdefault(section, {})[k] = v
        for section, vals in per.items():
            top[section] = replace(getattr(self, section), **vals)
        return replace(self, **top)


def all_settings() -> list[tuple[str | None, Field]]:
    """Every setting as (section or None for the top level, its field)."""
    out: list[tuple[str | None, Field]] = [
        (None, f) for f in fields_of(Settings)
        if f.name not in SECTIONS and f.name not in _NOT_SETTINGS]
    for section, kind in SECTIONS.items():
        out += [(section, f) for f in fields_of(kind)]
    return out
