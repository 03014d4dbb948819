"""The one exception tree of ClosedPaw.

Every error the library raises on purpose derives from :class:`ClosedPawError`::

    ClosedPawError
    ├── ConfigError (ValueError)            bad settings or arguments; fix the input
    │   ├── SpecError                       a sandbox spec or limit is invalid
    │   └── PolicyError                     an execution policy file or entry is invalid
    └── SandboxError                        the sandbox engine could not do what was asked
        ├── RuntimeUnavailable              no OCI runtime passed its live probe (fail closed)
        ├── BundleRejected                  the OCI bundle failed a named safety check
        ├── RuntimeFailure                  runc/runsc itself failed; stderr is mapped to a hint
        ├── SandboxNotFound (LookupError)   no sandbox with that id
        ├── SandboxStateError               the operation is not valid in the current state
        ├── SandboxLimitReached             the max-sandboxes cap is reached
        ├── FileTransferError               /input or /output could not be copied safely
        ├── ImageError                      an image could not be built, stored or used
        │   ├── ImageNotFound (LookupError) no image with that name in the store
        │   └── ImageRejected               an imported image is malformed or tries to escape
        └── SandboxTimeout (TimeoutError)   a lifecycle operation (not a command) timed out

A command that times out, is OOM-killed or exits non-zero is *not* an exception: it is an
:class:`~closedpaw.sandbox.result.ExecutionResult` with the matching flags set.

Foreign errors (runtime stderr, exit codes) are translated at the boundary by
:func:`closedpaw.sandbox.drivers.errors.map_runtime_error`, so messages say how to fix things.
"""

from __future__ import annotations

__all__ = [
    "BundleRejected",
    "ClosedPawError",
    "ConfigError",
    "FileTransferError",
    "ImageError",
    "ImageNotFound",
    "ImageRejected",
    "PolicyError",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "SandboxError",
    "SandboxLimitReached",
    "SandboxNotFound",
    "SandboxStateError",
    "SandboxTimeout",
    "SpecError",
]


class ClosedPawError(Exception):
    """Root of every error ClosedPaw raises on purpose."""


class ConfigError(ClosedPawError, ValueError):
    """Settings or arguments are invalid. The message names the offending key."""


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


class FileTransferError(SandboxError):
    """Files could not be copied into /input or out of /output safely."""


class SandboxTimeout(SandboxError, TimeoutError):
    """A lifecycle operation (create, stop) did not finish in time."""


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
