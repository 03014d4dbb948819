"""The one exception tree of ClosedPaw.

Every error the library raises on purpose derives from :class:`ClosedPawError`::

    ClosedPawError
    ├── ConfigError (ValueError)            bad settings or arguments; fix the input
    │   ├── SpecError                       a sandbox spec or limit is invalid
    │   ├── RulesError                      the risk rules YAML is invalid (nothing is loaded)
    │   └── PolicyError                     an execution policy file or entry is invalid
    ├── SandboxError                        the sandbox engine could not do what was asked
    │   ├── RuntimeUnavailable              no OCI runtime passed its live probe (fail closed)
    │   ├── BundleRejected                  the OCI bundle failed a named safety check
    │   ├── RuntimeFailure                  runc/runsc itself failed; stderr is mapped to a hint
    │   ├── AgentProtocolError              the in-sandbox agent broke the protocol or died;
    │   │                                   that sandbox was ended (never the host process)
    │   ├── SandboxNotFound (LookupError)   no sandbox with that id
    │   ├── SandboxStateError               the operation is not valid in the current state
    │   ├── SandboxLimitReached             the max-sandboxes cap is reached
    │   │   └── HostPidBudgetExceeded       the sandbox's host pids would pass the host's share
    │   ├── PoolExhausted (TimeoutError)    no pooled or new sandbox became ready in time
    │   ├── SnapshotError                   a checkpoint could not be taken or restored
    │   ├── FileTransferError               /input or /output could not be copied safely
    │   ├── ImageError                      an image could not be built, stored or used
    │   │   ├── ImageNotFound (LookupError) no image with that name in the store
    │   │   └── ImageRejected               an imported image is malformed or tries to escape
    │   ├── SandboxTimeout (TimeoutError)   a lifecycle operation (not a command) timed out
    │   └── StateStorageError (OSError)     the state filesystem failed (full, read-only, I/O);
    │                                       the message names the path
    ├── AuditError                          the audit log failed
    │   ├── AuditWriteError                 an entry could not be written: the act is refused
    │   └── AuditChainBroken                verify found the first entry that does not check
    ├── StoreError                          the database failed or is unreachable
    ├── GateError                           the gate refused a request
    │   ├── InvalidRequest (ValueError)     malformed input (never a traceback)
    │   ├── ActionNotFound (LookupError)    no action with that id
    │   ├── ActionStateError                not valid in the action's state (replay, late)
    │   ├── NoExecutor                      no executor is registered for the action's type
    │   ├── NotConfigured                   the executor's service (provider, vault) is absent
    │   ├── QuotaExceeded                   a principal's cap on waiting actions is reached
    │   ├── ApprovalRefused                 wrong hash, wrong role, self-approval, expired
    │   └── SkillError                      a skill could not be installed, found or run
    │       ├── SkillInvalid (ConfigError)  a skill.yaml failed a named check (file + key)
    │       ├── SkillRejected               an unsafe package (links out, setuid, tar-slip)
    │       ├── SkillNotFound (LookupError) no installed skill with that name
    │       ├── SkillTampered               installed files no longer match the pinned hash
    │       └── PathRefused                 the filesystem skill refused a path or a file
    ├── AuthError                           the caller could not be trusted
    │   ├── AuthenticationFailed            no, malformed or unknown bearer token
    │   └── PermissionDenied                authenticated, but the role may not do this
    ├── RateLimited                         too many requests; ``retry_after`` seconds
    ├── ProviderError                       a model provider failed (mapped in one table in
    │   │                                   closedpaw.providers.errors, with how-to-fix text)
    │   ├── ProviderNotConfigured           no such provider, or it is off (cloud until set up)
    │   ├── ProviderUnavailable             unreachable, or a server error (5xx)
    │   ├── ProviderAuthError               the API key was refused (401/403)
    │   ├── ProviderRateLimited             429; ``retry_after`` seconds when the server said
    │   ├── ModelNotFound (LookupError)     the provider has no such model
    │   ├── ContextTooLong                  the conversation does not fit the model's context
    │   ├── ProviderTimeout (TimeoutError)  no answer in time
    │   └── ProviderBadOutput               malformed JSON / an answer we cannot parse
    ├── AssistantError                      the assistant (conversations, the tool loop)
    │   ├── ConversationNotFound (LookupError)  no such conversation visible to the caller
    │   └── TurnStateError                  a turn is running, or nothing to cancel/resume
    ├── ClientError                         closedpaw.client could not get an answer
    │   ├── ApiUnreachable                  no HTTP answer (server down, wrong URL, timeout)
    │   └── ApiRefused                      the API answered with an error (its ``error_code``)
    ├── ChannelError                        a chat channel (Telegram, Slack...) failed; the
    │   │                                   platform's error mapped, with how-to-fix text
    │   └── PairingRefused                  unknown, used or expired pairing code; too many
    │                                       pending
    └── VaultError                          the secret vault refused or failed
        ├── VaultNotInitialized             no vault in this database: 'closedpaw vault init'
        ├── VaultLocked                     the vault is locked: unlock it first
        ├── VaultKeyInvalid                 wrong passphrase or key file (or an unsafe one)
        ├── SecretNotFound (LookupError)    no secret (or version) with that name
        └── SecretTampered                  a stored secret failed authentication

Every class carries a stable machine ``code`` (a class attribute, snake_case, unique; a test
checks it) that the HTTP API and ``--json`` output return as
``{"error": {"code": ..., "message": ...}}``. docs/architecture.md lists them.

A command that times out, is OOM-killed or exits non-zero is *not* an exception: it is an
:class:`~closedpaw.sandbox.result.ExecutionResult` with the matching flags set.

Foreign errors (runtime stderr, exit codes) are translated at the boundary by
:func:`closedpaw.sandbox.drivers.errors.map_runtime_error`, so messages say how to fix things.
"""

from __future__ import annotations

__all__ = [
    "ActionNotFound",
    "ActionStateError",
    "AgentProtocolError",
    "ApiRefused",
    "ApiUnreachable",
    "ApprovalRefused",
    "AssistantError",
    "AuditChainBroken",
    "AuditError",
    "AuditWriteError",
    "AuthError",
    "AuthenticationFailed",
    "BundleRejected",
    "ChannelError",
    "ClientError",
    "ClosedPawError",
    "ConfigError",
    "ContextTooLong",
    "ConversationNotFound",
    "FileTransferError",
    "GateError",
    "HostPidBudgetExceeded",
    "ImageError",
    "ImageNotFound",
    "ImageRejected",
    "InvalidRequest",
    "ModelNotFound",
    "NoExecutor",
    "NotConfigured",
    "PairingRefused",
    "PathRefused",
    "PermissionDenied",
    "PolicyError",
    "PoolExhausted",
    "ProviderAuthError",
    "ProviderBadOutput",
    "ProviderError",
    "ProviderNotConfigured",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "RulesError",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "SandboxError",
    "SandboxLimitReached",
    "SandboxNotFound",
    "SandboxStateError",
    "SandboxTimeout",
    "SecretNotFound",
    "SecretTampered",
    "SkillError",
    "SkillInvalid",
    "SkillNotFound",
    "SkillRejected",
    "SkillTampered",
    "SnapshotError",
    "SpecError",
    "StateStorageError",
    "StoreError",
    "TurnStateError",
    "VaultError",
    "VaultKeyInvalid",
    "VaultLocked",
    "VaultNotInitialized",
]


class ClosedPawError(Exception):
    """Root of every error ClosedPaw raises on purpose. ``code`` is stable (API, CLI)."""

    code = "error"


class ConfigError(ClosedPawError, ValueError):
    """Settings or arguments are invalid. The message names the offending key."""

    code = "config_error"


class RulesError(ConfigError):
    """The risk rules file is invalid; the gate refuses to start rather than guess."""

    code = "rules_invalid"


class SpecError(ConfigError):
    """A sandbox spec or resource limit is invalid."""

    code = "invalid_spec"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class SandboxError(ClosedPawError):
    """The sandbox engine could not do what was asked."""

    code = "sandbox_error"


class RuntimeUnavailable(SandboxError):
    """No usable OCI runtime: execution is refused rather than run unsandboxed."""

    code = "runtime_unavailable"


class BundleRejected(SandboxError):
    """An OCI bundle failed one or more named safety checks and was not started."""

    code = "bundle_rejected"

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        detail = "; ".join(f"{name}: {why}" for name, why in failures)
        super().__init__(f"bundle refused by safety checks: {detail}")


class AgentProtocolError(SandboxError):
    """The in-sandbox agent sent a malformed, oversized or truncated frame, broke the
    sequence, or its channel closed: the sandbox it ran in has been killed and deleted."""

    code = "agent_protocol_error"


class RuntimeFailure(SandboxError):
    """The OCI runtime binary failed. ``hint`` says how to fix it when known."""

    code = "runtime_failure"

    def __init__(self, runtime: str, action: str, detail: str, hint: str = "") -> None:
        self.runtime = runtime
        self.action = action
        self.detail = detail
        self.hint = hint
        msg = f"{runtime} {action} failed: {detail}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class SandboxNotFound(SandboxError, LookupError):
    """No sandbox with the given id is known."""

    code = "sandbox_not_found"


class SandboxStateError(SandboxError):
    """The operation is not valid in the sandbox's current state."""

    code = "sandbox_invalid_state"


class SandboxLimitReached(SandboxError):
    """The configured maximum number of live sandboxes is reached."""

    code = "sandbox_limit_reached"


class HostPidBudgetExceeded(SandboxLimitReached):
    """Starting the sandbox would let the sandboxes' host pids limits pass the share of
    ``kernel.pid_max`` they may hold together."""

    code = "host_pid_budget_exceeded"


class PoolExhausted(SandboxError, TimeoutError):
    """A warm pool had no ready sandbox and none could be created (the max-sandboxes cap is
    reached, or refills keep failing) before the acquire timeout."""

    code = "pool_exhausted"


class SnapshotError(SandboxError):
    """A sandbox snapshot could not be taken or restored (or the runtime cannot do it)."""

    code = "snapshot_failed"


class FileTransferError(SandboxError):
    """Files could not be copied into /input or out of /output safely."""

    code = "file_transfer_failed"


class SandboxTimeout(SandboxError, TimeoutError):
    """A lifecycle operation (create, stop) did not finish in time."""

    code = "sandbox_timeout"


class StateStorageError(SandboxError, OSError):
    """The host filesystem under the state directory failed while a sandbox was set up or
    torn down (no space, quota, read-only, I/O error); the message names the path."""

    code = "state_storage_failed"


class AuditError(ClosedPawError):
    """The audit log failed."""

    code = "audit_error"


class AuditWriteError(AuditError):
    """An audit entry could not be written durably; the act it records is refused."""

    code = "audit_unavailable"


class AuditChainBroken(AuditError):
    """Verification failed: ``seq`` is the first entry that does not check (or, for a
    truncated log, the first missing one)."""

    code = "audit_chain_broken"

    def __init__(self, seq: int, problem: str) -> None:
        self.seq = seq
        self.problem = problem
        super().__init__(f"audit chain broken at seq {seq}: {problem}")


class StoreError(ClosedPawError):
    """The database failed or is unreachable."""

    code = "store_unavailable"


class GateError(ClosedPawError):
    """The gate refused a request."""

    code = "refused"


class InvalidRequest(GateError, ValueError):
    """The request is malformed. The message says which field and why."""

    code = "invalid_request"


class ActionNotFound(GateError, LookupError):
    """No action with that id."""

    code = "action_not_found"


class ActionStateError(GateError):
    """The operation is not valid in the action's current state (e.g. a second approval)."""

    code = "invalid_state"


class NoExecutor(GateError):
    """No executor is registered for the action's type: the action fails, nothing runs."""

    code = "no_executor"


class NotConfigured(GateError):
    """The executor needs a service (an LLM provider, the vault, skills) that is not
    configured: the action fails, nothing runs."""

    code = "not_configured"


class QuotaExceeded(GateError):
    """A principal holds the most waiting actions (or parameter bytes) it may: decide on or
    wait for some first."""

    code = "quota_exceeded"


class ApprovalRefused(GateError):
    """An approval was refused: hash mismatch, role too low, self-approval, or expired.
    ``reason`` is a stable sub-code."""

    code = "approval_refused"

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class AuthError(ClosedPawError):
    """The caller could not be trusted."""

    code = "auth_error"


class AuthenticationFailed(AuthError):
    """No bearer token, a malformed one, or one that matches no principal."""

    code = "unauthorized"


class PermissionDenied(AuthError):
    """The principal is authenticated but its role may not do this."""

    code = "forbidden"


class RateLimited(ClosedPawError):
    """Too many requests from one principal; retry after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded; retry after {retry_after:.0f} s")
class PolicyError(ConfigError):
    """An execution policy is invalid; ``key`` is its dotted path (``python.memory``)."""

    code = "invalid_policy"

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}")


class ImageError(SandboxError):
    """An image could not be built, stored, imported or used."""

    code = "image_error"


class ImageNotFound(ImageError, LookupError):
    """No image with the given name is in the image store."""

    code = "image_not_found"


class ImageRejected(ImageError):
    """An image to import is malformed or unsafe (escaping paths, device nodes, ...)."""

    code = "image_rejected"


class ClientError(ClosedPawError):
    """:mod:`closedpaw.client` could not get what it asked the HTTP API for."""

    code = "client_error"


class ApiUnreachable(ClientError):
    """No HTTP answer: the server is not running, the URL is wrong, or it timed out."""

    code = "api_unreachable"


class ApiRefused(ClientError):
    """The API answered with an error. ``error_code`` is the server's stable code (one of the
    codes of this tree), ``status`` the HTTP status, ``body`` the decoded error object."""

    code = "api_refused"

    def __init__(self, status: int, error_code: str, message: str,
                 body: dict[str, object] | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.body = body or {}
        super().__init__(f"{error_code}: {message}")


# -- skills (issue 11) ----------------------------------------------------------------------
class SkillError(GateError):
    """A skill could not be installed, found or run."""

    code = "skill_error"


class SkillInvalid(SkillError, ConfigError):
    """A skill manifest failed one or more named checks; each names the file and dotted key."""

    code = "skill_invalid"

    def __init__(self, source: str, problems: list[tuple[str, str, str]] | None = None) -> None:
        #: (check name, dotted key, problem)
        self.source = source
        self.problems = problems or []
        text = "; ".join(f"{key}: {why} [{check}]" for check, key, why in self.problems)
        super().__init__(f"{source}: {text}" if text else source)


class SkillRejected(SkillError):
    """A skill package is unsafe: links out of the tree, absolute or '..' members, device
    nodes, setuid/setgid bits. Nothing was installed."""

    code = "skill_rejected"


class SkillNotFound(SkillError, LookupError):
    """No installed (or built-in) skill with that name."""

    code = "skill_not_found"


class SkillTampered(SkillError):
    """An installed skill's files no longer match the hash pinned at install: it is not run."""

    code = "skill_tampered"


class PathRefused(SkillError):
    """The filesystem skill refused a path (outside every root, a link, a special file, too
    large, too many entries)."""

    code = "path_refused"


# -- the vault (issue 9) --------------------------------------------------------------------
class VaultError(ClosedPawError):
    """The secret vault refused or failed."""

    code = "vault_error"


class VaultNotInitialized(VaultError):
    """The database holds no vault yet; ``closedpaw vault init`` creates one."""

    code = "vault_not_initialized"


class VaultLocked(VaultError):
    """The vault is locked (no master key in memory): secrets cannot be used until it is
    unlocked with its passphrase or key file."""

    code = "vault_locked"


class VaultKeyInvalid(VaultError):
    """The passphrase or key file does not open this vault, or the key file is unsafe
    (readable by others, not a regular file, malformed)."""

    code = "vault_key_invalid"


class SecretNotFound(VaultError, LookupError):
    """No secret (or no such version) with that name."""

    code = "secret_not_found"


class SecretTampered(VaultError):
    """A stored secret or its wrapped key failed authentication (changed, or moved to another
    name, level or version): it is refused, never returned."""

    code = "secret_tampered"


# -- providers and the assistant (issue 14) -----------------------------------------------
class ProviderError(ClosedPawError):
    """A model provider failed. ``provider`` names it; ``hint`` says how to fix it."""

    code = "provider_error"

    def __init__(self, message: str, *, provider: str = "", hint: str = "") -> None:
        self.provider = provider
        self.hint = hint
        where = f"provider {provider!r}: " if provider else ""
        super().__init__(f"{where}{message}" + (f" ({hint})" if hint else ""))


class ProviderNotConfigured(ProviderError):
    """No provider of that name, or it is off (cloud providers are off until configured)."""

    code = "provider_not_configured"


class ProviderUnavailable(ProviderError):
    """The provider cannot be reached, or it answered with a server error."""

    code = "provider_unavailable"


class ProviderAuthError(ProviderError):
    """The provider refused the credentials."""

    code = "provider_auth"


class ProviderRateLimited(ProviderError):
    """The provider rate-limited us; ``retry_after`` seconds when it said so."""

    code = "provider_rate_limited"

    def __init__(self, message: str, *, provider: str = "", hint: str = "",
                 retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, hint=hint)


class ModelNotFound(ProviderError, LookupError):
    """The provider has no model of that name."""

    code = "model_not_found"


class ContextTooLong(ProviderError):
    """The messages do not fit the model's context window."""

    code = "context_too_long"


class ProviderTimeout(ProviderError, TimeoutError):
    """The provider did not answer in time."""

    code = "provider_timeout"


class ProviderBadOutput(ProviderError):
    """The provider's answer was malformed (not JSON, or not the protocol's shape)."""

    code = "provider_bad_output"


class AssistantError(ClosedPawError):
    """The assistant could not do what was asked."""

    code = "assistant_error"


class ConversationNotFound(AssistantError, LookupError):
    """No conversation with that id is visible to the caller."""

    code = "conversation_not_found"


class TurnStateError(AssistantError):
    """The conversation's state does not allow this (a turn is already running, ...)."""

    code = "turn_state"


class ChannelError(ClosedPawError):
    """A chat channel failed: the platform refused the token, is unreachable, or answered
    with an error (mapped at the adapter, with how-to-fix text)."""

    code = "channel_error"


class PairingRefused(ChannelError):
    """A pairing code is unknown, used, revoked or expired, or the channel already has the
    most pending requests allowed."""

    code = "pairing_refused"
