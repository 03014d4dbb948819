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

Pools (``mgr.pool``), snapshots (``mgr.snapshot``, runsc), streams (``sb.stream``) and code
cells (``sb.code.run``) are described on their classes. This package imports nothing from the
layers above it and can be used on its own. The results and specs are imported eagerly (they
are light); everything else loads on first use, so ``closedpaw run`` never imports the
long-lived machinery (the agent channel, streams, asyncio).

Inside: ``spec.py`` ``policy.py`` ``result.py`` ``doctor.py`` at the top; ``bundle/`` (pure OCI
config), ``images/``, ``drivers/``; ``host/`` (a sandbox's footprint on the host), ``agent/``
(the in-sandbox agent) and ``lifecycle/`` (registry, manager, sandbox, pool, snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from closedpaw.sandbox.result import (
    CodeError,
    CodeResult,
    ExecutionResult,
    Isolation,
    ResourceUsage,
    SkippedFile,
)
from closedpaw.sandbox.spec import ExecRequest, ResourceLimits, SandboxSpec

TYPE_CHECKING = False  # typing is not imported at run time (closedpaw run)
if TYPE_CHECKING:
    from closedpaw.sandbox.agent.stream import ExecStream
    from closedpaw.sandbox.host.output import OutputSink
    from closedpaw.sandbox.host.reconcile import GcReport
    from closedpaw.sandbox.images.store import Image, ImageStore
    from closedpaw.sandbox.lifecycle.manager import SandboxInfo, SandboxManager
    from closedpaw.sandbox.lifecycle.pool import PoolStats, SandboxPool
    from closedpaw.sandbox.lifecycle.sandbox import Sandbox
    from closedpaw.sandbox.lifecycle.snapshot import Snapshot
    from closedpaw.sandbox.lifecycle.status import SandboxStatus
    from closedpaw.sandbox.policy import ExecutionPolicy, PolicySet, load_policies

__all__ = [
    "CodeError",
    "CodeResult",
    "ExecRequest",
    "ExecStream",
    "ExecutionPolicy",
    "ExecutionResult",
    "GcReport",
    "Image",
    "ImageStore",
    "Isolation",
    "OutputSink",
    "PolicySet",
    "PoolStats",
    "ResourceLimits",
    "ResourceUsage",
    "Sandbox",
    "SandboxInfo",
    "SandboxManager",
    "SandboxPool",
    "SandboxSpec",
    "SandboxStatus",
    "SkippedFile",
    "Snapshot",
    "default_manager",
    "load_policies",
    "run",
]

# Loaded on first access (module attribute lookup), so importing this package stays cheap.
_LAZY = {
    "ExecStream": "closedpaw.sandbox.agent.stream",
    "ExecutionPolicy": "closedpaw.sandbox.policy",
    "GcReport": "closedpaw.sandbox.host.reconcile",
    "Image": "closedpaw.sandbox.images.store",
    "ImageStore": "closedpaw.sandbox.images.store",
    "OutputSink": "closedpaw.sandbox.host.output",
    "PolicySet": "closedpaw.sandbox.policy",
    "PoolStats": "closedpaw.sandbox.lifecycle.pool",
    "Sandbox": "closedpaw.sandbox.lifecycle.sandbox",
    "SandboxInfo": "closedpaw.sandbox.lifecycle.manager",
    "SandboxManager": "closedpaw.sandbox.lifecycle.manager",
    "SandboxPool": "closedpaw.sandbox.lifecycle.pool",
    "SandboxStatus": "closedpaw.sandbox.lifecycle.status",
    "Snapshot": "closedpaw.sandbox.lifecycle.snapshot",
    "load_policies": "closedpaw.sandbox.policy",
}

_default: SandboxManager | None = None


def default_manager() -> SandboxManager:
    """The process-wide manager behind :func:`run` (settings from the environment)."""
    global _default
    if _default is None:
        from closedpaw.sandbox.lifecycle.manager import SandboxManager

        _default = SandboxManager()
    return _default


def run(argv: Sequence[str], spec: SandboxSpec | None = None, *, runtime: str | None = None,
        stdin: bytes = b"", env: Mapping[str, str] | None = None, workdir: str | None = None,
        sink: OutputSink | None = None) -> ExecutionResult:
    """Run ``argv`` once in a fresh sandbox and return what happened."""
    return default_manager().run(argv, spec, runtime=runtime, stdin=stdin, env=env,
                                 workdir=workdir, sink=sink)


def __getattr__(name: str) -> object:
    import importlib  # here: the package imports cheaply

    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
