"""The sections of :class:`~closedpaw.settings.Settings`, one per concern. Each field declares
its environment variable beside it: ``CLOSEDPAW_`` + the field name in capitals (a test checks
that, and that field names are unique across sections)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from closedpaw.errors import ConfigError
from closedpaw.settings._field import setting

__all__ = ["RUNTIME_CHOICES", "ApiSettings", "GateSettings", "PoolSettings", "SandboxSettings"]

RUNTIME_CHOICES = ("auto", "runsc", "runc")


@dataclass(frozen=True)
class SandboxSettings:
    """The sandbox engine."""

    runtime: str = setting("auto", env="CLOSEDPAW_RUNTIME", kind=str,
                           doc="OCI runtime: auto (runsc, else runc), runsc or runc")
    max_sandboxes: int = setting(32, env="CLOSEDPAW_MAX_SANDBOXES", kind=int,
                                 doc="live sandboxes per manager at most")
    output_cap_bytes: int = setting(1024 * 1024, env="CLOSEDPAW_OUTPUT_CAP_BYTES", kind=int,
                                    doc="bytes of stdout and of stderr kept per command")
    cgroup_parent: str = setting("closedpaw", env="CLOSEDPAW_CGROUP_PARENT", kind=str,
                                 doc="cgroup under which every sandbox's cgroup is made")
    image_dir: Path | None = setting(None, env="CLOSEDPAW_IMAGE_DIR", kind=Path,
                                     doc="the image store; unset = DATA_DIR/images")
    policy_file: Path = setting(Path("/etc/closedpaw/policies.yaml"),
                                env="CLOSEDPAW_POLICY_FILE", kind=Path,
                                doc="the user's execution policies, read over the built-in "
                                "ones when it exists")
    pid_wait_s: float = setting(60.0, env="CLOSEDPAW_PID_WAIT_S", kind=float,
                                doc="seconds a sandbox that does not fit in the host pid "
                                "budget waits for others to end before it is refused")

    def __post_init__(self) -> None:
        if self.pid_wait_s < 0:
            raise ConfigError("pid_wait_s: must be 0 or more")
        if self.runtime not in RUNTIME_CHOICES:
            raise ConfigError(
                f"runtime: {self.runtime!r} is not one of {', '.join(RUNTIME_CHOICES)}")
        if self.max_sandboxes < 1:
            raise ConfigError("max_sandboxes: must be at least 1")
        if self.output_cap_bytes < 1:
            raise ConfigError("output_cap_bytes: must be at least 1")
        if not self.cgroup_parent.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("cgroup_parent: only letters, digits, '-' and '_' are allowed")


@dataclass(frozen=True)
class PoolSettings:
    """Warm pools and snapshots."""

    pool_size: int = setting(2, env="CLOSEDPAW_POOL_SIZE", kind=int,
                             doc="pre-started sandboxes a warm pool keeps ready")
    pool_idle_timeout_s: float = setting(
        300.0, env="CLOSEDPAW_POOL_IDLE_TIMEOUT_S", kind=float,
        aliases=("CLOSEDPAW_POOL_IDLE_TIMEOUT",),
        doc="seconds without an acquire after which a pool deletes its ready sandboxes "
        "(it warms up again on the next acquire); 0 = never")
    snapshot_dir: Path | None = setting(
        None, env="CLOSEDPAW_SNAPSHOT_DIR", kind=Path,
        doc="checkpoint images (root-only: they hold a warmed sandbox's memory); "
        "unset = STATE_DIR/snapshots")

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ConfigError("pool_size: must be at least 1")
        if self.pool_idle_timeout_s < 0:
            raise ConfigError("pool_idle_timeout_s: must be 0 (never) or more seconds")


@dataclass(frozen=True)
class GateSettings:
    """The gate: actions, rules, approvals, the database."""

    db_url: str | None = setting(None, env="CLOSEDPAW_DB_URL", kind=str,
                                 doc="SQLAlchemy URL; unset = SQLite (WAL) at "
                                 "DATA_DIR/closedpaw.db")
    rules_file: Path | None = setting(None, env="CLOSEDPAW_RULES_FILE", kind=Path,
                                      doc="YAML risk rules evaluated before the built-in ones; "
                                      "unset = DATA_DIR/rules.yaml when it exists")
    workspace_dir: Path | None = setting(None, env="CLOSEDPAW_WORKSPACE_DIR", kind=Path,
                                         doc="host directory file_read may read at medium "
                                         "risk; unset = DATA_DIR/workspace")
    approval_ttl_s: float = setting(900.0, env="CLOSEDPAW_APPROVAL_TTL_S", kind=float,
                                    aliases=("CLOSEDPAW_APPROVAL_TTL",),
                                    doc="seconds a pending action waits for a decision before "
                                    "it is expired")
    require_distinct_approver: bool = setting(
        False, env="CLOSEDPAW_REQUIRE_DISTINCT_APPROVER", kind=bool,
        doc="the approver must be another principal than the requester")

    def __post_init__(self) -> None:
        if not (1.0 <= self.approval_ttl_s <= 30 * 86400):
            raise ConfigError("approval_ttl_s: must be between 1 second and 30 days")


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API and the clients of it (CLI, ``closedpaw.client``)."""

    api_host: str = setting("127.0.0.1", env="CLOSEDPAW_API_HOST", kind=str,
                            doc="address 'closedpaw serve' binds (loopback unless "
                            "--allow-remote)")
    api_port: int = setting(8765, env="CLOSEDPAW_API_PORT", kind=int, doc="its port")
    api_url: str | None = setting(None, env="CLOSEDPAW_API_URL", kind=str,
                                  doc="base URL clients talk to; unset = "
                                  "http://API_HOST:API_PORT")
    api_token: str | None = setting(None, env="CLOSEDPAW_API_TOKEN", kind=str,
                                    doc="bearer token clients send; unset = read "
                                    "DATA_DIR/api-token")
    rate_limit_per_minute: int = setting(240, env="CLOSEDPAW_RATE_LIMIT_PER_MINUTE", kind=int,
                                         aliases=("CLOSEDPAW_RATE_LIMIT",),
                                         doc="requests per minute per principal (token "
                                         "bucket, burst = the same)")

    def __post_init__(self) -> None:
        if self.rate_limit_per_minute < 1:
            raise ConfigError("rate_limit_per_minute: must be at least 1")
        if not (0 <= self.api_port <= 65535):
            raise ConfigError("api_port: must be between 0 and 65535")
