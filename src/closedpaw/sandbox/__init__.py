"""The sandbox engine: spec -> policy -> bundle -> driver -> result.

Quick use::

    from closedpaw.sandbox import ResourceLimits, SandboxSpec, SandboxManager

    with SandboxManager() as mgr:
        r = mgr.run(["python3", "-c", "print(6*7)"],
                    SandboxSpec(limits=ResourceLimits(memory_mb=256, timeout_s=10)))
        print(r.stdout_text, r.isolation.runtime)

        with mgr.create() as sb:              # long-lived: many commands, one sandbox
            sb.commands.run(["sh", "-c", "echo hi > /tmp/x"])
            print(sb.commands.run(["cat", "/tmp/x"]).stdout_text)

This package imports nothing from the layers above it and can be used on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from closedpaw.sandbox.result import ExecutionResult, Isolation, ResourceUsage, SkippedFile
from closedpaw.sandbox.spec import ExecRequest, ResourceLimits, SandboxSpec

if TYPE_CHECKING:
    from closedpaw.sandbox.images.store import ImageStore
    from closedpaw.sandbox.manager import SandboxManager
    from closedpaw.sandbox.output import OutputSink
    from closedpaw.sandbox.policy import ExecutionPolicy, load_policies

__all__ = [
    "ExecRequest",
    "ExecutionPolicy",
    "ExecutionResult",
    "ImageStore",
    "Isolation",
    "ResourceLimits",
    "ResourceUsage",
    "Sandbox",
    "SandboxInfo",
    "SandboxManager",
    "SandboxSpec",
    "SandboxStatus",
    "SkippedFile",
    "default_manager",
    "load_policies",
    "run",
]

_default: SandboxManager | None = None


def default_manager() -> SandboxManager:
    """The process-wide manager behind :func:`run` (settings from the environment)."""
    global _default
    if _default is None:
        from closedpaw.sandbox.manager import SandboxManager

        _default = SandboxManager()
    return _default


def run(argv: Sequence[str], spec: SandboxSpec | None = None, *, runtime: str | None = None,
        stdin: bytes = b"", env: Mapping[str, str] | None = None, workdir: str | None = None,
        sink: OutputSink | None = None) -> ExecutionResult:
    """Run ``argv`` once in a fresh sandbox and return what happened."""
    return default_manager().run(argv, spec, runtime=runtime, stdin=stdin, env=env,
                                 workdir=workdir, sink=sink)


def __getattr__(name: str) -> object:
    # Lazy: keep `import closedpaw.sandbox` cheap for the CLI.
    if name in ("SandboxManager", "SandboxInfo"):
        from closedpaw.sandbox import manager

        return getattr(manager, name)
    if name in ("ExecutionPolicy", "load_policies"):
        from closedpaw.sandbox import policy

        return getattr(policy, name)
    if name == "ImageStore":
        from closedpaw.sandbox.images.store import ImageStore

        return ImageStore
    if name in ("Sandbox", "SandboxStatus"):
        from closedpaw.sandbox import sandbox

        return getattr(sandbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
