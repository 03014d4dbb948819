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
    │   ├── PoolExhausted (TimeoutError)    no pooled or new sandbox became ready in time
    │   ├── SnapshotError                   a checkpoint could not be taken or restored
    │   ├── FileTransferError               /input or /output could not be copied safely
    │   ├── ImageError                      an image could not be built, stored or used
    │   │   ├── ImageNotFound (LookupError) no image with that name in the store
    │   │   └── ImageRejected               an imported image is malformed or tries to escape
    │   └── SandboxTimeout (TimeoutError)   a lifecycle operation (not a command) timed out
    ├── AuditError                          the audit log failed
    │   ├── AuditWriteError                 an entry could not be written: the act is refused
    │   └── AuditChainBroken                verify found the first entry that does not check
    ├── StoreError                          the database failed or is unreachable
    ├── GateError                           the orchestrator refused a request
    │   ├── InvalidRequest (ValueError)     malformed input (never a traceback)
    │   ├── ActionNotFound (LookupError)    no action with that id
    │   ├── ActionStateError                not valid in the action's state (replay, late)
    │   └── ApprovalRefused                 wrong hash, wrong role, self-approval, expired
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
    └── AssistantError                      the assistant (conversations, the tool loop)
        ├── ConversationNotFound (LookupError)  no such conversation visible to the caller
        └── TurnStateError                  a turn is running, or nothing to cancel/resume

Errors of the gate carry a stable machine ``code`` (a class attribute) that the HTTP API
returns as ``{"error": {"code": ..., "message": ...}}``.

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
    "ApprovalRefused",
    "AuditChainBroken",
    "AuditError",
    "AuditWriteError",
    "AuthError",
    "AuthenticationFailed",
    "BundleRejected",
    "ClosedPawError",
    "ConfigError",
    "FileTransferError",
    "GateError",
    "ImageError",
    "ImageNotFound",
    "ImageRejected",
    "InvalidRequest",
    "PermissionDenied",
    "PolicyError",
    "PoolExhausted",
    "RateLimited",
    "RulesError",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "SandboxError",
    "SandboxLimitReached",
    "SandboxNotFound",
    "SandboxStateError",
    "SandboxTimeout",
    "SnapshotError",
    "SpecError",
    "StoreError",
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

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class SandboxError(ClosedPawError):
    """The sandbox engine could not do what was asked."""


class RuntimeUnavailable(SandboxError):
    """No usable OCI runtime: execution is refused rather than run unsandboxed."""


class BundleRejected(SandboxError):
    """An OCI bundle failed one or more named safety checks and was not started."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        detail = "; ".join(f"{name}: {why}" for name, why in failures)
        super().__init__(f"bundle refused by safety checks: {detail}")


class AgentProtocolError(SandboxError):
    """The in-sandbox agent sent a malformed, oversized or truncated frame, broke the
    sequence, or its channel closed: the sandbox it ran in has been killed and deleted."""


class RuntimeFailure(SandboxError):
    """The OCI runtime binary failed. ``hint`` says how to fix it when known."""

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


class SandboxStateError(SandboxError):
    """The operation is not valid in the sandbox's current state."""


class SandboxLimitReached(SandboxError):
    """The configured maximum number of live sandboxes is reached."""


class PoolExhausted(SandboxError, TimeoutError):
    """A warm pool had no ready sandbox and none could be created (the max-sandboxes cap is
    reached, or refills keep failing) before the acquire timeout."""


class SnapshotError(SandboxError):
    """A sandbox snapshot could not be taken or restored (or the runtime cannot do it)."""


class FileTransferError(SandboxError):
    """Files could not be copied into /input or out of /output safely."""


class SandboxTimeout(SandboxError, TimeoutError):
    """A lifecycle operation (create, stop) did not finish in time."""


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
    """The orchestrator refused a request."""

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


class ApprovalRefused(GateError):
    """An approval was refused: hash mismatch, role too low, self-approval, or expired.
    ``reason`` is a stable sub-code."""

    code = "approval_refused"

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class AuthError(ClosedPawError):
    """The caller could not be trusted."""

    code = "unauthorized"


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

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}")


class ImageError(SandboxError):
    """An image could not be built, stored, imported or used."""


class ImageNotFound(ImageError, LookupError):
    """No image with the given name is in the image store."""


class ImageRejected(ImageError):
    """An image to import is malformed or unsafe (escaping paths, device nodes, ...)."""


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
