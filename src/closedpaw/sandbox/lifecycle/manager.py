"""SandboxManager: resolves a driver, runs one-shots, creates long-lived sandboxes, keeps the
max-sandboxes cap and cleans up. It owns a :class:`~closedpaw.sandbox.host.reaper.Reaper`, so
teardown happens off the caller's critical path but always happens.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence

from closedpaw._record import Record, replace
from closedpaw.errors import RuntimeFailure, RuntimeUnavailable, SandboxNotFound, SpecError
from closedpaw.sandbox.drivers.detect import PROBE_MARKER, RuntimeRegistry
from closedpaw.sandbox.host.output import OutputSink
from closedpaw.sandbox.host.reaper import Reaper
from closedpaw.sandbox.host.statedir import SandboxDir, new_sandbox_id, storage_error
from closedpaw.sandbox.lifecycle.execute import make_result, runtime_failure, supervise
from closedpaw.sandbox.lifecycle.registry import Registry
from closedpaw.sandbox.result import ExecutionResult, SkippedFile
from closedpaw.sandbox.spec import MIB, ExecRequest, ResourceLimits, SandboxSpec
from closedpaw.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    # Not imported at run time: the one-shot path (`closedpaw run`) stays free of the
    # long-lived machinery (the agent channel and streams, asyncio).
    from pathlib import Path
    from types import TracebackType

    from closedpaw.sandbox.drivers.base import Driver
    from closedpaw.sandbox.host.reconcile import GcReport
    from closedpaw.sandbox.lifecycle.pool import SandboxPool
    from closedpaw.sandbox.lifecycle.sandbox import Sandbox
    from closedpaw.sandbox.lifecycle.snapshot import Snapshot
    from closedpaw.sandbox.lifecycle.status import SandboxStatus
    from closedpaw.sandbox.policy import PolicySet

__all__ = ["SandboxInfo", "SandboxManager", "require_root"]

NOT_ROOT = ("sandboxes need root: run as root (e.g. 'sudo .venv/bin/closedpaw ...'); "
            "runc and runsc need it to create namespaces and cgroups")


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeUnavailable(NOT_ROOT)


class SandboxInfo(Record):
    id: str
    status: SandboxStatus
    runtime: str
    created_at: float


class SandboxManager:
    """Entry point of the engine. Use as a context manager, or call :meth:`close`.

    ``driver`` pins one driver (tests inject a ``FakeDriver``); otherwise the runtime is
    chosen per call: the ``runtime`` argument beats ``settings.sandbox.runtime`` beats ``auto``.
    ``reaper`` replaces the default threaded teardown worker (the CLI passes a deferred one
    and detaches it after the run).
    """

    def __init__(self, settings: Settings | None = None, *, driver: Driver | None = None,
                 reaper: Reaper | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._pinned = driver
        self.registry = RuntimeRegistry(self.settings, self._probe)
        self.reaper = reaper or Reaper()
        #: the live sandboxes, the cap, open pools and snapshots (handed to each of them)
        self.live: Registry[Sandbox] = Registry(self.settings, self.reaper, self.driver)
        self._policies: PolicySet | None = None

    # -- drivers --------------------------------------------------------------------------
    def driver(self, runtime: str | None = None) -> Driver:
        if self._pinned is not None:
            return self._pinned
        require_root()
        return self.registry.resolve(runtime or self.settings.sandbox.runtime)

    def _probe(self, driver: Driver) -> tuple[bool, str]:
        spec = SandboxSpec(limits=ResourceLimits(memory_mb=128, disk_mb=8, max_processes=16,
                                                 timeout_s=60))
        res = self._run_with(driver, ["/bin/sh", "-c", f"echo {PROBE_MARKER}"], spec,
                             stdin=b"", sink=None, env={}, workdir=None, count=False)
        if res.exit_code == 0 and res.stdout.strip() == PROBE_MARKER.encode():
            return True, f"ran a hardened probe sandbox in {res.duration_ms:.0f} ms"
        return False, (f"probe sandbox exited {res.exit_code}: "
                       f"{res.stderr_text.strip()[:300] or 'no output'}")

    # -- one-shot ------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], spec: SandboxSpec | None = None, *,
            runtime: str | None = None, stdin: bytes = b"", env: Mapping[str, str] | None = None,
            workdir: str | None = None, sink: OutputSink | None = None) -> ExecutionResult:
        """Run ``argv`` in a fresh sandbox that is destroyed afterwards."""
        req = ExecRequest(argv=argv, stdin=stdin, env=env or {}, workdir=workdir)
        spec = spec or SandboxSpec()
        if not isinstance(spec, SandboxSpec):
            raise SpecError("spec", "must be a SandboxSpec")
        driver = self.driver(runtime)
        return self._run_with(driver, list(req.argv), spec, stdin=req.stdin, sink=sink,
                              env=req.env, workdir=req.workdir, count=True)

    def _run_with(self, driver: Driver, argv: list[str], spec: SandboxSpec, *, stdin: bytes,
                  sink: OutputSink | None, env: Mapping[str, str], workdir: str | None,
                  count: bool) -> ExecutionResult:
        with self.live.slot() if count else contextlib.nullcontext():
            try:
                return self._run_once(driver, argv, spec, stdin=stdin, sink=sink, env=env,
                                      workdir=workdir)
            except (OSError, RuntimeFailure) as e:
                full = storage_error(e, self.settings.state_dir)
                if full is not e:
                    raise full from e
                raise

    def _run_once(self, driver: Driver, argv: list[str], spec: SandboxSpec, *, stdin: bytes,
                  sink: OutputSink | None, env: Mapping[str, str],
                  workdir: str | None) -> ExecutionResult:
        sid = new_sandbox_id()
        sd: SandboxDir | None = None
        started = False
        try:
            sd = SandboxDir.allocate(self.settings, sid, spec, driver.features())
            sd.build(argv, env, workdir or spec.workdir)
            log = sd.dir / "runtime.log"
            t0 = time.monotonic()
            proc = driver.run(sid, sd.bundle, stdin=bool(stdin), log=log)
            started = True
            out = supervise(driver, proc, cid=sid, timeout_s=spec.limits.timeout_s,
                            cap=spec.limits.output_cap_bytes, stdin_data=stdin, sink=sink,
                            log_file=log, started=t0)
            err = runtime_failure(driver, "run", out)
            oom = sd.cgroups.oom_kills_since_last() > 0
            if err is not None and not oom:  # under runsc an OOM may take the Sentry with it
                raise err
            usage = replace(sd.cgroups.usage(), memory_bytes=None)
            files: list[str] = []
            skipped: list[SkippedFile] = []
            if spec.output_dir is not None and sd.output_mount is not None:
                from closedpaw.sandbox.host.files import COLLECT_GRACE_S, collect_output

                files, skipped = collect_output(
                    sd.output_mount, spec.output_dir, max_bytes=spec.limits.output_dir_mb * MIB,
                    deadline=max(t0 + spec.limits.timeout_s,
                                 time.monotonic() + COLLECT_GRACE_S),
                    overwrite=spec.output_overwrite)
            return make_result(sd, out, argv, oom=oom, usage=usage, files=files,
                               skipped=skipped)
        finally:
            if sd is not None:
                self._teardown_later(driver, sid, sd, started)

    def _teardown_later(self, driver: Driver, sid: str, sd: SandboxDir, started: bool) -> None:
        def job() -> None:
            if started and driver.state(sid) is not None:
                driver.delete(sid)
            sd.teardown()
        self.reaper.submit(f"sandbox {sid}", job)

    # -- policies and code -----------------------------------------------------------------
    def policies(self) -> PolicySet:
        """The built-in policies with ``settings.sandbox.policy_file`` on top (loaded once)."""
        if self._policies is None:
            from closedpaw.sandbox.policy import load_policies

            self._policies = load_policies(self.settings.sandbox.policy_file)
        return self._policies

    def spec_for(self, policy: str) -> SandboxSpec:
        """The :class:`SandboxSpec` of a named execution policy."""
        return self.policies().get(policy).spec

    def run_code(self, lang: str, code: str, *, policy: str | None = None,
                 spec: SandboxSpec | None = None, runtime: str | None = None,
                 stdin: bytes = b"", args: Sequence[str] = (),
                 sink: OutputSink | None = None) -> ExecutionResult:
        """Run ``code`` in ``lang`` (python, node, bash): the code is written read-only to
        ``/code/main.<ext>`` and run by the language's interpreter under the language's
        policy (or ``policy``, or an explicit ``spec``)."""
        from closedpaw.sandbox.policy import LANGUAGES

        if lang not in LANGUAGES:
            raise SpecError("lang", f"{lang!r} is not one of {', '.join(LANGUAGES)}")
        if not isinstance(code, str):
            raise SpecError("code", "must be text")
        language = LANGUAGES[lang]
        if spec is None:
            spec = self.policies().for_language(lang, policy).spec
        spec = replace(spec, code_files={**spec.code_files, language.filename: code})
        argv = [*language.argv, f"/code/{language.filename}", *args]
        return self.run(argv, spec, runtime=runtime, stdin=stdin, sink=sink)

    # -- long-lived ----------------------------------------------------------------------------
    def create(self, spec: SandboxSpec | None = None, *, runtime: str | None = None,
               restore_from: Path | None = None, agent: bool = True) -> Sandbox:
        """Create and start a long-lived sandbox. Delete it (or use ``with``) when done.

        ``restore_from`` is a checkpoint image (runsc only): the sandbox resumes the
        checkpointed processes instead of booting; use :class:`~closedpaw.sandbox.Snapshot`,
        which keeps spec and image together. ``agent=False`` keeps the runtime's
        ``exec`` instead of the in-sandbox agent (snapshots need that)."""
        from closedpaw.sandbox.lifecycle.sandbox import Sandbox

        return Sandbox.launch(self.live, spec or SandboxSpec(), runtime=runtime,
                              restore_from=restore_from, agent=agent)

    # -- warm pools and snapshots -----------------------------------------------------------
    def pool(self, policy: str | None = None, *, spec: SandboxSpec | None = None,
             runtime: str | None = None, size: int | None = None,
             idle_timeout_s: float | None = None, snapshot: Snapshot | None = None,
             warmup: Sequence[Sequence[str]] | None = None,
             kernels: Sequence[str] = (), settle_s: float | None = None) -> SandboxPool:
        """A warm pool of ``size`` (default ``settings.pools.pool_size``) running sandboxes of a
        named policy or an explicit ``spec``, or clones of ``snapshot``. ``kernels`` (e.g.
        ``("python",)``): code kernels started in each sandbox before it is ready. ``settle_s``
        (default ``settings.pools.pool_settle_s``): a refill after an acquire waits this long
        unless the pool is empty. With ``warmup``
        (runsc) the pool first takes its own snapshot after running those commands, fills
        itself with clones of it and removes the image when closed. Close the pool (or use
        ``with``); :meth:`cleanup` closes the pools that are still open."""
        from closedpaw.sandbox.lifecycle.pool import SandboxPool

        if policy is not None and spec is not None:
            raise SpecError("pool", "give a policy or a spec, not both")
        if snapshot is not None and (policy is not None or spec is not None
                                     or warmup is not None):
            raise SpecError("pool", "a snapshot pool takes the snapshot's spec; give no "
                            "policy, spec or warmup")
        if policy is not None:
            spec = self.spec_for(policy)
        owned = None
        if warmup is not None:
            owned = snapshot = self.snapshot(spec, warmup=warmup, runtime=runtime or "runsc")
        if snapshot is not None:
            spec, runtime = snapshot.spec, snapshot.runtime
        try:
            p = SandboxPool(self.live, spec or SandboxSpec(), runtime=runtime, size=size,
                            idle_timeout_s=idle_timeout_s, snapshot=snapshot,
                            owns_snapshot=owned is not None, name=policy or "",
                            kernels=kernels, settle_s=settle_s)
        except BaseException:
            if owned is not None:
                owned.remove()
            raise
        self.live.add_pool(p)
        return p

    def snapshot(self, spec: SandboxSpec | None = None, *, policy: str | None = None,
                 warmup: Sequence[Sequence[str]] = (), runtime: str = "runsc") -> Snapshot:
        """Start a sandbox, run the ``warmup`` commands in it and checkpoint it (runsc):
        :meth:`Snapshot.restore` then starts clones of that state. Remove it when done."""
        from closedpaw.sandbox.lifecycle.snapshot import Snapshot

        if policy is not None:
            if spec is not None:
                raise SpecError("snapshot", "give a policy or a spec, not both")
            spec = self.spec_for(policy)
        return Snapshot.take(self.live, spec or SandboxSpec(), warmup=warmup, runtime=runtime)

    def get(self, sid: str) -> Sandbox:
        sb = self.live.get(sid)
        if sb is None:
            raise SandboxNotFound(f"no live sandbox {sid!r}")
        return sb

    def list(self) -> list[SandboxInfo]:
        boxes = self.live.sandboxes()
        return [SandboxInfo(b.id, b.status, b.driver.name, b.created_at) for b in boxes]

    def status(self, sid: str) -> SandboxStatus:
        return self.get(sid).refresh_status()

    def cleanup(self) -> int:
        """Stop and delete every live sandbox of this manager; wait for teardown. Returns how
        many were deleted. Open pools are closed first (their refills would race it)."""
        return self.live.cleanup()

    def gc(self) -> GcReport:
        """Remove leftovers of sandboxes whose owning process died (see
        :mod:`closedpaw.sandbox.host.reconcile`). Live sandboxes, this manager's or another
        process's, are left alone."""
        from closedpaw.sandbox.drivers.detect import PREFERENCE
        from closedpaw.sandbox.host.reconcile import collect_garbage

        drivers: dict[str, Driver] = {}
        if self._pinned is not None:
            drivers[self._pinned.name] = self._pinned
        else:
            require_root()
            for name in PREFERENCE:
                try:
                    drivers[name] = self.registry.driver(name)
                except RuntimeUnavailable:
                    continue
        return collect_garbage(self.settings, drivers)

    def close(self) -> None:
        self.cleanup()

    def __enter__(self) -> SandboxManager:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
