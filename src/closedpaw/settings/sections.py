"""The sections of :class:`~closedpaw.settings.Settings`, one per concern. Each field declares
its environment variable beside it: ``CLOSEDPAW_`` + the field name in capitals (a test checks
that, and that field names are unique across sections)."""

from __future__ import annotations

from pathlib import Path

from closedpaw._record import Record
from closedpaw.errors import ConfigError
from closedpaw.settings._field import setting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RUNTIME_CHOICES", "ApiSettings", "GateSettings", "ImageSettings", "McpSettings",
           "PoolSettings",
           "ProviderSettings", "SandboxSettings", "SkillSettings", "VaultSettings"]

RUNTIME_CHOICES = ("auto", "runsc", "runc")


class SandboxSettings(Record):
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
    userns: bool = setting(True, env="CLOSEDPAW_USERNS", kind=bool,
                           doc="runc: give each sandbox its own user namespace and host "
                           "uid/gid range (off: every sandbox is host uid 65534)")
    userns_base: int = setting(2_000_000_000, env="CLOSEDPAW_USERNS_BASE", kind=int,
                               doc="first host uid/gid of the per-sandbox ranges (65536 "
                               "ids each); must be unused on this host")
    userns_slots: int = setting(1024, env="CLOSEDPAW_USERNS_SLOTS", kind=int,
                                doc="how many per-sandbox ranges exist above the base")
    userns_dir: Path = setting(Path("/run/closedpaw-uidranges"), env="CLOSEDPAW_USERNS_DIR",
                               kind=Path, doc="where ranges in use are recorded (one per "
                               "host: every ClosedPaw instance must share it)")
    pid_wait_s: float = setting(60.0, env="CLOSEDPAW_PID_WAIT_S", kind=float,
                                doc="seconds a sandbox that does not fit in the host pid "
                                "budget waits for others to end before it is refused")

    def __post_init__(self) -> None:
        if not (self.userns_base >= 65536
                and self.userns_base + 65536 * self.userns_slots <= 2**32 - 1):
            raise ConfigError("userns_base: the ranges must lie between 65536 and 2^32-2")
        if self.userns_slots < 1:
            raise ConfigError("userns_slots: must be at least 1")
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


_GIB = 1 << 30
_MIB = 1 << 20


class ImageSettings(Record):
    """Bounds on one image import (``closedpaw image import``); each, when hit, ends the import
    with a one-line error naming it and installs nothing. Sizes are bytes."""

    import_max_unpacked_bytes: int = setting(
        16 * _GIB, env="CLOSEDPAW_IMPORT_MAX_UNPACKED_BYTES", kind=int,
        doc="bytes written while unpacking all layers (4 KiB blocks; hard links once)")
    import_max_file_bytes: int = setting(4 * _GIB, env="CLOSEDPAW_IMPORT_MAX_FILE_BYTES",
                                         kind=int, doc="one regular file in a layer")
    import_max_blob_bytes: int = setting(8 * _GIB, env="CLOSEDPAW_IMPORT_MAX_BLOB_BYTES",
                                         kind=int, doc="one blob of the layout (as stored)")
    import_max_header_bytes: int = setting(
        _MIB, env="CLOSEDPAW_IMPORT_MAX_HEADER_BYTES", kind=int,
        doc="one extended tar header (PAX records, GNU long names)")
    import_max_members: int = setting(2_000_000, env="CLOSEDPAW_IMPORT_MAX_MEMBERS", kind=int,
                                      doc="members of all layers together")
    import_max_layers: int = setting(256, env="CLOSEDPAW_IMPORT_MAX_LAYERS", kind=int,
                                     doc="layers in one image")
    import_max_depth: int = setting(128, env="CLOSEDPAW_IMPORT_MAX_DEPTH", kind=int,
                                    doc="path components of one entry")
    import_deadline_s: float = setting(3600.0, env="CLOSEDPAW_IMPORT_DEADLINE_S", kind=float,
                                       doc="wall-clock seconds for one whole import")

    def __post_init__(self) -> None:
        for name in ("import_max_unpacked_bytes", "import_max_file_bytes",
                     "import_max_blob_bytes", "import_max_header_bytes", "import_max_members",
                     "import_max_layers", "import_max_depth", "import_deadline_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name}: must be a positive number, got {v!r}")


class PoolSettings(Record):
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
    pool_settle_s: float = setting(
        0.05, env="CLOSEDPAW_POOL_SETTLE_S", kind=float,
        doc="after an acquire, a pool starts the replacement this much later (at once when "
        "it is empty), and the gate deletes the sandbox its action used this much after the "
        "result: the action and the recording of its result do not share the CPU with a "
        "container's start and teardown; 0 = at once")
    code_pool: bool = setting(True, env="CLOSEDPAW_CODE_POOL", kind=bool,
                              doc="the gate's code_execution takes a warm sandbox of its "
                              "policy's pool (used once, deleted; the pool refills) instead of "
                              "starting a cold one; 0 = a cold sandbox per action")

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ConfigError("pool_size: must be at least 1")
        if self.pool_idle_timeout_s < 0:
            raise ConfigError("pool_idle_timeout_s: must be 0 (never) or more seconds")
        if not 0 <= self.pool_settle_s <= 10:
            raise ConfigError("pool_settle_s: must be 0 to 10 seconds")


class GateSettings(Record):
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
    # issue 13: per-principal caps (a greedy principal cannot exhaust the gate)
    max_pending_per_principal: int = setting(
        50, env="CLOSEDPAW_MAX_PENDING_PER_PRINCIPAL", kind=int,
        doc="actions one principal may have waiting (pending, approved, executing) at once")
    max_pending_bytes_per_principal: int = setting(
        16 * 1024 * 1024, env="CLOSEDPAW_MAX_PENDING_BYTES_PER_PRINCIPAL", kind=int,
        doc="bytes of canonical parameters those waiting actions may hold together")
    workers: int = setting(4, env="CLOSEDPAW_WORKERS", kind=int,
                           doc="execution workers (threads running approved actions)")
    max_executions_per_principal: int = setting(
        0, env="CLOSEDPAW_MAX_EXECUTIONS_PER_PRINCIPAL", kind=int,
        doc="actions of one principal executing at once; 0 = workers - 1 (at least 1): "
        "one principal never holds every worker")

    audit_segment_bytes: int = setting(
        64 * 1024 * 1024, env="CLOSEDPAW_AUDIT_SEGMENT_BYTES", kind=int,
        doc="the audit log's active segment is sealed (renamed audit.<first seq>.jsonl) once "
        "it passes this size; the chain continues in the next")

    def __post_init__(self) -> None:
        if not (1.0 <= self.approval_ttl_s <= 30 * 86400):
            raise ConfigError("approval_ttl_s: must be between 1 second and 30 days")
        if self.max_pending_per_principal < 1 or self.max_pending_bytes_per_principal < 1:
            raise ConfigError("max_pending_per_principal, max_pending_bytes_per_principal: "
                              "must be at least 1")
        if self.audit_segment_bytes < 4096:
            raise ConfigError("audit_segment_bytes: must be at least 4096")
        if not (1 <= self.workers <= 256) or self.max_executions_per_principal < 0:
            raise ConfigError("workers: 1-256; max_executions_per_principal: 0 or more")


class ApiSettings(Record):
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
    # issue 13: cheap refusals at the HTTP layer
    max_body_bytes: int = setting(8 * 1024 * 1024, env="CLOSEDPAW_MAX_BODY_BYTES", kind=int,
                                  doc="request body bytes at most (counted while streaming)")
    max_connections: int = setting(512, env="CLOSEDPAW_MAX_CONNECTIONS", kind=int,
                                   doc="open connections at most; over it the oldest one "
                                   "still sending its headers is closed")
    header_timeout_s: float = setting(10.0, env="CLOSEDPAW_HEADER_TIMEOUT_S", kind=float,
                                      doc="seconds a connection may take to send a request's "
                                      "headers")
    body_idle_timeout_s: float = setting(10.0, env="CLOSEDPAW_BODY_IDLE_TIMEOUT_S",
                                         kind=float, doc="seconds a request body may stall")
    keep_alive_s: float = setting(5.0, env="CLOSEDPAW_KEEP_ALIVE_S", kind=float,
                                  doc="seconds an idle keep-alive connection stays open")
    max_streams_per_principal: int = setting(
        4, env="CLOSEDPAW_MAX_STREAMS_PER_PRINCIPAL", kind=int,
        doc="open /api/events streams per principal")
    stream_recheck_s: float = setting(5.0, env="CLOSEDPAW_STREAM_RECHECK_S", kind=float,
                                      doc="seconds between checks that an event stream's "
                                      "token is still valid (revoked: the stream closes)")
    summary_period_s: float = setting(60.0, env="CLOSEDPAW_SUMMARY_PERIOD_S", kind=float,
                                      doc="auth failures and 429s are audited as one summary "
                                      "per source per this many seconds")
    # issue 10: the web UI's sessions
    web_session_idle_s: float = setting(1800.0, env="CLOSEDPAW_WEB_SESSION_IDLE_S", kind=float,
                                        doc="a web session unused this many seconds ends")
    web_link_ttl_s: float = setting(900.0, env="CLOSEDPAW_WEB_LINK_TTL_S", kind=float,
                                    doc="seconds the one-time login link printed by "
                                    "'closedpaw serve' stays valid")

    def __post_init__(self) -> None:
        if self.rate_limit_per_minute < 1:
            raise ConfigError("rate_limit_per_minute: must be at least 1")
        if not (0 <= self.api_port <= 65535):
            raise ConfigError("api_port: must be between 0 and 65535")
        if self.max_body_bytes < 1024 or self.max_connections < 8 \
                or self.max_streams_per_principal < 1:
            raise ConfigError("max_body_bytes >= 1024, max_connections >= 8, "
                              "max_streams_per_principal >= 1")
        if min(self.header_timeout_s, self.body_idle_timeout_s, self.keep_alive_s,
               self.stream_recheck_s, self.summary_period_s, self.web_session_idle_s,
               self.web_link_ttl_s) <= 0:
            raise ConfigError("timeouts and periods must be more than 0 seconds")


class SkillSettings(Record):
    """Skills: where installed skills live, and the filesystem skill's roots and limits."""

    skills_dir: Path | None = setting(None, env="CLOSEDPAW_SKILLS_DIR", kind=Path,
                                      doc="installed skills (pinned trees); unset = "
                                      "DATA_DIR/skills")
    fs_roots: str = setting("", env="CLOSEDPAW_FS_ROOTS", kind=str,
                            doc="the filesystem skill's allowlisted host directories, "
                            "':'-separated absolute paths; empty = it may touch nothing")
    fs_max_bytes: int = setting(1024 * 1024, env="CLOSEDPAW_FS_MAX_BYTES", kind=int,
                                doc="bytes the filesystem skill reads or writes per file")
    fs_max_entries: int = setting(1000, env="CLOSEDPAW_FS_MAX_ENTRIES", kind=int,
                                  doc="entries a list or search visits at most")

    def __post_init__(self) -> None:
        for r in self.roots:
            if not r.is_absolute() or ".." in r.parts:
                raise ConfigError(f"fs_roots: {str(r)!r} must be an absolute path without "
                                  "'..'")
        if not (1 <= self.fs_max_bytes <= 1 << 30):
            raise ConfigError("fs_max_bytes: must be between 1 and 1073741824")
        if not (1 <= self.fs_max_entries <= 1_000_000):
            raise ConfigError("fs_max_entries: must be between 1 and 1000000")

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(r) for r in self.fs_roots.split(":") if r)


#: OWASP's floor for Argon2id (the vault refuses less): 19 MiB, 2 passes
VAULT_MIN_KDF_MEMORY_KIB = 19 * 1024
VAULT_MIN_KDF_ITERATIONS = 2


class VaultSettings(Record):
    """The secret vault (its tables live in the gate's database)."""

    vault_key_file: Path | None = setting(
        None, env="CLOSEDPAW_VAULT_KEY_FILE", kind=Path,
        doc="key file that opens a key-file vault, when it is not where 'vault init' "
        "recorded it (e.g. mounted from elsewhere); unset = the recorded path")
    vault_unlock_at_start: bool = setting(
        True, env="CLOSEDPAW_VAULT_UNLOCK_AT_START", kind=bool,
        doc="the server unlocks a key-file vault when it starts; false = it stays locked "
        "and refuses secret use")
    vault_kdf_memory_kib: int = setting(
        VAULT_MIN_KDF_MEMORY_KIB, env="CLOSEDPAW_VAULT_KDF_MEMORY_KIB", kind=int,
        doc="Argon2id memory (KiB) for a new passphrase (vault init, rotate); at least 19456")
    vault_kdf_iterations: int = setting(
        VAULT_MIN_KDF_ITERATIONS, env="CLOSEDPAW_VAULT_KDF_ITERATIONS", kind=int,
        doc="Argon2id passes for a new passphrase; at least 2")

    def __post_init__(self) -> None:
        if self.vault_kdf_memory_kib < VAULT_MIN_KDF_MEMORY_KIB:
            raise ConfigError(f"vault_kdf_memory_kib: at least {VAULT_MIN_KDF_MEMORY_KIB} "
                              "(OWASP's floor for Argon2id)")
        if self.vault_kdf_iterations < VAULT_MIN_KDF_ITERATIONS:
            raise ConfigError(f"vault_kdf_iterations: at least {VAULT_MIN_KDF_ITERATIONS}")


class ProviderSettings(Record):
    """Model providers and the assistant's per-turn caps. API keys are never settings: a
    provider's ``api_key: secret:NAME`` is resolved by the composition root's secret resolver
    (the vault when configured, else ``CLOSEDPAW_SECRET_<NAME>``)."""

    default_provider: str | None = setting(
        None, env="CLOSEDPAW_DEFAULT_PROVIDER", kind=str,
        doc="provider a conversation uses unless it names one; unset = the first local one "
        "that answers (ollama, else the embedded model); never a cloud one by itself")
    ollama_url: str = setting("http://127.0.0.1:11434", env="CLOSEDPAW_OLLAMA_URL", kind=str,
                              doc="base URL of the built-in ollama provider")
    local_model_path: Path | None = setting(
        None, env="CLOSEDPAW_LOCAL_MODEL_PATH", kind=Path,
        doc="GGUF file of the embedded provider; unset = DATA_DIR/models/<model>.gguf")
    providers_file: Path | None = setting(
        None, env="CLOSEDPAW_PROVIDERS_FILE", kind=Path,
        doc="YAML or JSON: {default?, providers: [{type: ollama|openai|anthropic|google|local, "
        "name, ...}]}; replaces the built-in ollama + local pair")
    turn_max_tool_calls: int = setting(8, env="CLOSEDPAW_TURN_MAX_TOOL_CALLS", kind=int,
                                       doc="tool calls one assistant turn may make")
    turn_max_tokens: int = setting(32_000, env="CLOSEDPAW_TURN_MAX_TOKENS", kind=int,
                                   doc="prompt + completion tokens over one turn's model calls")
    turn_wall_s: float = setting(300.0, env="CLOSEDPAW_TURN_WALL_S", kind=float,
                                 doc="active seconds of one turn (waiting for an approval "
                                 "does not count)")
    tool_result_chars: int = setting(4000, env="CLOSEDPAW_TOOL_RESULT_CHARS", kind=int,
                                     doc="characters of one tool result the model sees")

    def __post_init__(self) -> None:
        for name in ("turn_max_tool_calls", "turn_max_tokens", "turn_wall_s",
                     "tool_result_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name}: must be a positive number, got {v!r}")
        if not self.ollama_url.startswith(("http://", "https://")):
            raise ConfigError(f"ollama_url: {self.ollama_url!r} is not an http(s) URL")

    def load_file(self) -> dict[str, Any]:
        """The providers file as a mapping ({} when none is set). YAML or JSON by suffix;
        ConfigError naming the file for anything unreadable or of the wrong shape."""
        path = self.providers_file
        if path is None:
            return {}
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"providers_file: cannot read {path}: {e.strerror}") from None
        try:
            if path.suffix == ".json":
                import json

                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
        except ValueError as e:  # json.JSONDecodeError
            raise ConfigError(f"providers_file: {path} is not valid JSON: {e}") from None
        except Exception as e:  # yaml.YAMLError (yaml is imported only here)
            raise ConfigError(f"providers_file: {path} is not valid YAML: "
                              f"{' '.join(str(e).split())[:300]}") from None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ConfigError(f"providers_file: {path} must hold a mapping "
                              "{default?, providers: [...]}")
        return raw


class McpSettings(Record):
    """The MCP server and the long-lived sandbox sessions (``sandbox_session`` actions)."""

    session_idle_s: float = setting(
        900.0, env="CLOSEDPAW_SESSION_IDLE_S", kind=float,
        doc="seconds without a call after which a sandbox session is deleted (its id is "
        "refused afterwards), and an MCP client session over HTTP is ended (its sandbox "
        "sessions with it)")
    max_sandbox_sessions: int = setting(8, env="CLOSEDPAW_MAX_SANDBOX_SESSIONS", kind=int,
                                        doc="sandbox sessions open at once, server-wide")
    max_sandbox_sessions_per_principal: int = setting(
        4, env="CLOSEDPAW_MAX_SANDBOX_SESSIONS_PER_PRINCIPAL", kind=int,
        doc="sandbox sessions one principal may hold open at once")
    mcp_max_clients: int = setting(256, env="CLOSEDPAW_MCP_MAX_CLIENTS", kind=int,
                                   doc="MCP client sessions open at once over HTTP (/mcp)")
    mcp_max_clients_per_principal: int = setting(
        16, env="CLOSEDPAW_MCP_MAX_CLIENTS_PER_PRINCIPAL", kind=int,
        doc="MCP client sessions one principal may hold open at once over HTTP")

    def __post_init__(self) -> None:
        for name in ("session_idle_s", "max_sandbox_sessions",
                     "max_sandbox_sessions_per_principal", "mcp_max_clients",
                     "mcp_max_clients_per_principal"):
            v = getattr(self, name)
            if isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name}: must be a positive number, got {v!r}")
