"""Settings: the only module that reads environment variables.

Precedence, highest first: an explicit argument to a call > a :class:`Settings` object passed in
> ``CLOSEDPAW_*`` environment variables > the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from closedpaw.errors import ConfigError

__all__ = ["RUNTIME_CHOICES", "Settings"]

RUNTIME_CHOICES = ("auto", "runsc", "runc")


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration of the sandbox engine and the gate.

    ``state_dir`` holds per-sandbox bundles and runtime state (a tmpfs such as /run is best);
    ``data_dir`` holds durable data such as the prepared host root filesystem and probe cache;
    ``image_dir`` the image store (default ``data_dir/images``); ``policy_file`` the user's
    execution policies, read over the built-in ones when it exists.
    """

    state_dir: Path = Path("/run/closedpaw")
    data_dir: Path = Path("/var/lib/closedpaw")
    runtime: str = "auto"
    max_sandboxes: int = 32
    output_cap_bytes: int = 1024 * 1024
    cgroup_parent: str = "closedpaw"
    # -- the gate (orchestrator, audit, API) ----------------------------------------------
    #: SQLAlchemy URL; None = SQLite (WAL) at ``data_dir/closedpaw.db``.
    db_url: str | None = None
    #: YAML risk rules evaluated before the built-in ones; None = ``data_dir/rules.yaml``
    #: when that file exists.
    rules_file: Path | None = None
    #: host directory whose files ``file_read`` may read at medium risk; None =
    #: ``data_dir/workspace``.
    workspace_dir: Path | None = None
    #: seconds a pending action waits for a decision before it is ``expired``.
    approval_ttl_s: float = 900.0
    #: when true, the approver of an action must be another principal than its requester.
    require_distinct_approver: bool = False
    #: requests per minute per principal on the HTTP API (token bucket, burst = the same).
    rate_limit_per_minute: int = 240
    api_host: str = "127.0.0.1"
    api_port: int = 8765
    #: base URL the CLI talks to; None = ``http://{api_host}:{api_port}``.
    api_url: str | None = None
    #: bearer token the CLI sends; None = read ``data_dir/api-token``.
    api_token: str | None = None
    image_dir: Path | None = None
    policy_file: Path = Path("/etc/closedpaw/policies.yaml")
    # -- warm pools and snapshots ---------------------------------------------------------
    #: pre-started sandboxes a warm pool keeps ready (``SandboxManager.pool``).
    pool_size: int = 2
    #: seconds without an acquire after which a pool deletes its ready sandboxes (it warms
    #: up again on the next acquire); 0 = never.
    pool_idle_timeout_s: float = 300.0
    #: where checkpoint images live (root-only: they hold the memory of the warmed
    #: sandbox); None = ``state_dir/snapshots``.
    snapshot_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ConfigError(
                f"runtime: {self.runtime!r} is not one of {', '.join(RUNTIME_CHOICES)}"
            )
        if self.max_sandboxes < 1:
            raise ConfigError("max_sandboxes: must be at least 1")
        if self.output_cap_bytes < 1:
            raise ConfigError("output_cap_bytes: must be at least 1")
        if not self.cgroup_parent.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("cgroup_parent: only letters, digits, '-' and '_' are allowed")
        if not (1.0 <= self.approval_ttl_s <= 30 * 86400):
            raise ConfigError("approval_ttl_s: must be between 1 second and 30 days")
        if self.rate_limit_per_minute < 1:
            raise ConfigError("rate_limit_per_minute: must be at least 1")
        if self.pool_size < 1:
            raise ConfigError("pool_size: must be at least 1")
        if self.pool_idle_timeout_s < 0:
            raise ConfigError("pool_idle_timeout_s: must be 0 (never) or more seconds")
        if not (0 <= self.api_port <= 65535):
            raise ConfigError("api_port: must be between 0 and 65535")

    # -- derived paths (one place that decides where things live) -------------------------
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'closedpaw.db'}"

    @property
    def rules_path(self) -> Path:
        return self.rules_file or self.data_dir / "rules.yaml"

    @property
    def workspace_path(self) -> Path:
        return self.workspace_dir or self.data_dir / "workspace"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api-token"

    @property
    def api_base_url(self) -> str:
        if self.api_url:
            return self.api_url.rstrip("/")
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def images(self) -> Path:
        """The image store directory."""
        return self.image_dir if self.image_dir is not None else self.data_dir / "images"

    @property
    def snapshots(self) -> Path:
        """The directory of checkpoint images."""
        return self.snapshot_dir if self.snapshot_dir is not None else (
            self.state_dir / "snapshots")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CLOSEDPAW_*`` variables over the defaults."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if v := env.get("CLOSEDPAW_STATE_DIR"):
            kwargs["state_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_DATA_DIR"):
            kwargs["data_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_IMAGE_DIR"):
            kwargs["image_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_SNAPSHOT_DIR"):
            kwargs["snapshot_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_POOL_IDLE_TIMEOUT"):
            try:
                kwargs["pool_idle_timeout_s"] = float(v)
            except ValueError:
                raise ConfigError(f"CLOSEDPAW_POOL_IDLE_TIMEOUT: {v!r} is not a number") from None
        if v := env.get("CLOSEDPAW_POLICY_FILE"):
            kwargs["policy_file"] = Path(v)
        if v := env.get("CLOSEDPAW_CGROUP_PARENT"):
            kwargs["cgroup_parent"] = v
        if v := env.get("CLOSEDPAW_RUNTIME"):
            kwargs["runtime"] = v
        for key, name in (("db_url", "CLOSEDPAW_DB_URL"), ("api_host", "CLOSEDPAW_API_HOST"),
                          ("api_url", "CLOSEDPAW_API_URL"),
                          ("api_token", "CLOSEDPAW_API_TOKEN")):
            if v := env.get(name):
                kwargs[key] = v
        for key, name in (("rules_file", "CLOSEDPAW_RULES_FILE"),
                          ("workspace_dir", "CLOSEDPAW_WORKSPACE_DIR")):
            if v := env.get(name):
                kwargs[key] = Path(v)
        if v := env.get("CLOSEDPAW_REQUIRE_DISTINCT_APPROVER"):
            if v.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"CLOSEDPAW_REQUIRE_DISTINCT_APPROVER: {v!r} is not a boolean")
            kwargs["require_distinct_approver"] = v.lower() in ("1", "true", "yes")
        if v := env.get("CLOSEDPAW_APPROVAL_TTL"):
            try:
                kwargs["approval_ttl_s"] = float(v)
            except ValueError:
                raise ConfigError(f"CLOSEDPAW_APPROVAL_TTL: {v!r} is not a number") from None
        for key, name in (("max_sandboxes", "CLOSEDPAW_MAX_SANDBOXES"),
                          ("output_cap_bytes", "CLOSEDPAW_OUTPUT_CAP_BYTES"),
                          ("rate_limit_per_minute", "CLOSEDPAW_RATE_LIMIT"),
                          ("api_port", "CLOSEDPAW_API_PORT"),
                          ("pool_size", "CLOSEDPAW_POOL_SIZE")):
            if v := env.get(name):
                try:
                    kwargs[key] = int(v)
                except ValueError:
                    raise ConfigError(f"{name}: {v!r} is not an integer") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        for k in changes:
            if k not in known:
                raise ConfigError(f"{k}: unknown setting")
        return replace(self, **changes)  # type: ignore[arg-type]
