"""What a sandbox run produced, and what actually protected it."""

from __future__ import annotations

from closedpaw._record import Record, field, values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CodeError", "CodeResult", "ExecutionResult", "Isolation", "ResourceUsage",
           "SkippedFile"]


class Isolation(Record):
    """The protection that was in force for a run, stamped from the bundle that ran it."""

    runtime: str               # "runsc" or "runc" (or "fake" in unit tests)
    runtime_version: str
    platform: str              # "gvisor-ptrace" (user-space kernel) or "native" (host kernel)
    seccomp: bool              # a default-deny syscall allowlist was enforced
    seccomp_syscalls: int      # how many syscalls the allowlist admits
    network: str               # "none": a private network namespace with loopback only
    rootfs: str                # "host-bind:ro", or "<image>:overlay:rw|ro" for store images
    user: str                  # "uid:gid" of the sandboxed process
    capabilities: tuple[str, ...] = ()
    no_new_privileges: bool = True
    namespaces: tuple[str, ...] = ()
    memory_limit_mb: int = 0
    cpu_cores: float = 0.0
    pids_limit: int = 0
    image: str = "host"        # the image name, and its digest (the host skeleton's for host)
    image_digest: str = ""
    user_namespace: bool = False   # its own user namespace (runc: own host uid/gid range)
    host_uids: str = ""        # "first-last" host uids of that range; "" = none of its own

    def to_dict(self) -> dict[str, Any]:
        d = values(self)
        d["capabilities"] = list(self.capabilities)
        d["namespaces"] = list(self.namespaces)
        return d


class ResourceUsage(Record):
    """Measured by the kernel's cgroup accounting; ``None`` when it could not be read."""

    cpu_time_ms: float | None = None
    peak_memory_bytes: int | None = None
    #: memory charged right now (``Sandbox.usage`` only; ``None`` on per-command results).
    memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return values(self)


class SkippedFile(Record):
    """An entry of /output that was not copied back, and why."""

    path: str
    reason: str


class ExecutionResult(Record):
    """Outcome of one command in a sandbox.

    ``exit_code`` follows the shell convention: 128+N when killed by signal N. ``timed_out`` is
    set when the engine killed it at its deadline (exit_code is then 137); ``oom_killed`` when
    the kernel's memory cgroup killed it.
    """

    sandbox_id: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_ms: float
    isolation: Isolation
    timed_out: bool = False
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_total_bytes: int = 0
    stderr_total_bytes: int = 0
    usage: ResourceUsage = field(default_factory=ResourceUsage)
    output_files: tuple[str, ...] = ()
    skipped_files: tuple[SkippedFile, ...] = ()

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by ``closedpaw run --json`` (and later the API and audit)."""
        return {
            "sandbox_id": self.sandbox_id,
            "exit_code": self.exit_code,
            "stdout": self.stdout_text,
            "stderr": self.stderr_text,
            "timed_out": self.timed_out,
            "oom_killed": self.oom_killed,
            "truncated": self.truncated,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "stdout_total_bytes": self.stdout_total_bytes,
            "stderr_total_bytes": self.stderr_total_bytes,
            "duration_ms": round(self.duration_ms, 3),
            "usage": self.usage.to_dict(),
            "isolation": self.isolation.to_dict(),
            "output_files": list(self.output_files),
            "skipped_files": [values(s) for s in self.skipped_files],
        }


class CodeError(Record):
    """An exception raised by a code cell: its type name, message and traceback text."""

    name: str
    message: str
    traceback: str


class CodeResult(ExecutionResult):
    """An :class:`ExecutionResult` of a stateful code cell, plus ``value`` (the ``repr`` of
    the last expression, when it was not None/undefined), ``error`` (what the cell raised)
    and ``restarted`` (the interpreter died or timed out and its state is lost)."""

    value: str | None = None
    error: CodeError | None = None
    restarted: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["value"] = self.value
        d["error"] = None if self.error is None else {
            "name": self.error.name, "message": self.error.message,
            "traceback": self.error.traceback}
        d["restarted"] = self.restarted
        return d
