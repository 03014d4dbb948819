"""Sandbox: a long-lived container that runs many commands, built from small parts.

``sb.commands.run([...])`` (or ``sb.exec``) runs a command; ``sb.code.run("python", src)``
runs code as a file; ``sb.files.collect()`` copies ``/output`` back. Lifecycle: pending ->
creating -> running <-> paused -> stopping -> stopped, or error. ``with manager.create(spec)
as sb:`` deletes it on exit.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from closedpaw.errors import SandboxStateError, SandboxTimeout, SnapshotError, SpecError
from closedpaw.sandbox.drivers.base import Driver
from closedpaw.sandbox.drivers.errors import command_start_failure
from closedpaw.sandbox.execute import Outcome, runtime_failure, supervise
from closedpaw.sandbox.files import collect_output
from closedpaw.sandbox.output import OutputSink
from closedpaw.sandbox.result import ExecutionResult, ResourceUsage, SkippedFile
from closedpaw.sandbox.spec import ExecRequest, SandboxSpec
from closedpaw.sandbox.workspace import Workspace

if TYPE_CHECKING:
    from closedpaw.sandbox.manager import SandboxManager

__all__ = ["INIT_ARGV", "Sandbox", "SandboxStatus"]

# The idle init of a long-lived sandbox: exits on TERM, and its `wait` reaps orphans.
INIT_ARGV = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done")


class SandboxStatus(enum.StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class Commands:
    """Runs commands in its sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def run(self, argv: Sequence[str], *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, workdir: str | None = None,
            timeout_s: float | None = None, sink: OutputSink | None = None) -> ExecutionResult:
        return self._sb.exec(argv, stdin=stdin, env=env, workdir=workdir, timeout_s=timeout_s,
                             sink=sink)


class Code:
    """Runs code in a language (python, node, bash) in its sandbox: the code is written to a
    file under ``/tmp/.closedpaw-code`` by the sandbox's own shell (the host never writes into
    a live sandbox), then run by the language's interpreter."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox
        self._n = itertools.count(1)

    def run(self, lang: str, code: str, *, args: Sequence[str] = (), stdin: bytes = b"",
            env: Mapping[str, str] | None = None, timeout_s: float | None = None,
            sink: OutputSink | None = None) -> ExecutionResult:
        from closedpaw.sandbox.policy import LANGUAGES

        if lang not in LANGUAGES:
            raise SpecError("lang", f"{lang!r} is not one of {', '.join(LANGUAGES)}")
        if not isinstance(code, str):
            raise SpecError("code", "must be text")
        language = LANGUAGES[lang]
        path = f"/tmp/.closedpaw-code/{next(self._n)}-{language.filename}"
        w = self._sb.exec(["sh", "-c", 'umask 022; mkdir -p "${1%/*}" && cat > "$1"', "sh",
                           path], stdin=code.encode(), timeout_s=timeout_s)
        if w.exit_code != 0:
            raise SandboxStateError(f"could not write the code into sandbox {self._sb.id}: "
                                    f"{w.stderr_text.strip()[:300] or f'exit {w.exit_code}'}")
        return self._sb.exec([*language.argv, path, *args], stdin=stdin, env=env,
                             timeout_s=timeout_s, sink=sink)


class Files:
    """Copies ``/output`` back to the spec's ``output_dir`` (or another directory)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def collect(self, dest: Path | None = None) -> tuple[list[str], list[SkippedFile]]:
        ws = self._sb.workspace
        target = dest or self._sb.spec.output_dir
        if ws is None or ws.output_mount is None or target is None:
            raise SandboxStateError("this sandbox has no /output (set SandboxSpec.output_dir)")
        return collect_output(ws.output_mount, Path(target))


class Sandbox:
    """Created by :meth:`SandboxManager.create`; not constructed directly."""

    def __init__(self, manager: SandboxManager, driver: Driver, spec: SandboxSpec,
                 sid: str) -> None:
        self.manager = manager
        self.driver = driver
        self.spec = spec
        self.id = sid
        self.status = SandboxStatus.PENDING
        self.created_at = time.time()
        self.workspace: Workspace | None = None
        self.commands = Commands(self)
        self.files = Files(self)
        self.code = Code(self)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.restored = False           # resumed from a snapshot rather than booted

    def __repr__(self) -> str:
        return f"<Sandbox {self.id} {self.driver.name} {self.status.value}>"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, restore_from: Path | None = None) -> None:
        """Boot the sandbox, or with ``restore_from`` (a runsc checkpoint image of a sandbox
        of the same spec) resume the checkpointed processes. Either way the bundle is built
        and checked the same way."""
        if self.status is not SandboxStatus.PENDING:
            raise SandboxStateError(f"sandbox {self.id} is {self.status.value}, not pending")
        self.status = SandboxStatus.CREATING
        try:
            self.workspace = Workspace.allocate(self.manager.settings, self.id, self.spec,
                                                self.driver.features())
            self.workspace.build(list(INIT_ARGV), {}, "/")
            if restore_from is None:
                self.driver.create(self.id, self.workspace.bundle)
            else:
                restore = getattr(self.driver, "restore", None)
                if restore is None:
                    raise SnapshotError(f"the {self.driver.name} driver cannot restore "
                                        "snapshots; use runsc")
                restore(self.id, self.workspace.bundle, restore_from)
                self.restored = True
        except BaseException:
            self.status = SandboxStatus.ERROR
            self._teardown()
            raise
        self.status = SandboxStatus.RUNNING

    def refresh_status(self) -> SandboxStatus:
        """Ask the runtime; a container that died on its own is reported stopped."""
        if self.status in (SandboxStatus.RUNNING, SandboxStatus.PAUSED):
            st = self.driver.state(self.id)
            if st is None or st == "stopped":
                self.status = SandboxStatus.STOPPED
            elif st == "paused":
                self.status = SandboxStatus.PAUSED
            elif st == "running":
                self.status = SandboxStatus.RUNNING
        return self.status

    def usage(self) -> ResourceUsage:
        """What the whole sandbox used since it started, from its cgroups: CPU time, peak and
        current memory of every process in it (its init, every command and, under runsc,
        the Sentry and gofer of the user-space kernel)."""
        ws = self.workspace
        if ws is None:
            raise SandboxStateError(f"sandbox {self.id} is {self.status.value}; its cgroups "
                                    "are gone")
        return ws.cgroups.usage()

    def pause(self) -> None:
        self._require(SandboxStatus.RUNNING)
        self.driver.pause(self.id)
        self.status = SandboxStatus.PAUSED

    def resume(self) -> None:
        self._require(SandboxStatus.PAUSED)
        self.driver.resume(self.id)
        self.status = SandboxStatus.RUNNING

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process, wait up to ``grace_s``, then SIGKILL."""
        if self.status in (SandboxStatus.STOPPED, SandboxStatus.PENDING, SandboxStatus.ERROR):
            return
        if self.status is SandboxStatus.PAUSED:
            with contextlib.suppress(Exception):
                self.driver.resume(self.id)
        self.status = SandboxStatus.STOPPING
        try:
            if self._signal("TERM"):
                end = time.monotonic() + grace_s
                while time.monotonic() < end:
                    if self.driver.state(self.id) in (None, "stopped"):
                        break
                    time.sleep(0.02)
            if self.driver.state(self.id) not in (None, "stopped"):
                self._signal("KILL")
                end = time.monotonic() + 10
                while self.driver.state(self.id) not in (None, "stopped"):
                    if time.monotonic() > end:
                        raise SandboxTimeout(f"sandbox {self.id} did not stop after SIGKILL")
                    time.sleep(0.02)
        except BaseException:
            self.status = SandboxStatus.ERROR
            raise
        self.status = SandboxStatus.STOPPED

    def _signal(self, sig: str) -> bool:
        found = self.driver.kill(self.id, sig, all_processes=True)
        if found and self.restored:
            # runsc (2022) `kill --all` misses the processes of a restored container; its
            # init's death ends every process of the container, so signal the init too.
            self.driver.kill(self.id, sig)
        return found

    def delete(self) -> None:
        """Stop (if needed), collect /output if configured, and remove everything."""
        try:
            if self.status in (SandboxStatus.RUNNING, SandboxStatus.PAUSED,
                               SandboxStatus.STOPPING):
                self.stop()
        finally:
            ws = self.workspace
            if ws is not None and ws.output_mount is not None and self.spec.output_dir:
                with contextlib.suppress(Exception):
                    collect_output(ws.output_mount, self.spec.output_dir)
            self._teardown()

    def _teardown(self) -> None:
        ws, self.workspace = self.workspace, None
        driver, sid = self.driver, self.id

        def job() -> None:
            if driver.state(sid) is not None:
                driver.delete(sid)
            if ws is not None:
                ws.teardown()
        self.manager.reaper.submit(f"sandbox {sid}", job)
        self.manager._forget(sid)
        if self.status is not SandboxStatus.ERROR:
            self.status = SandboxStatus.STOPPED

    def _require(self, *states: SandboxStatus) -> None:
        if self.status not in states:
            raise SandboxStateError(
                f"sandbox {self.id} is {self.status.value}; this needs "
                + " or ".join(s.value for s in states))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.delete()

    # -- work -------------------------------------------------------------------------------
    def exec(self, argv: Sequence[str], *, stdin: bytes = b"",
             env: Mapping[str, str] | None = None, workdir: str | None = None,
             timeout_s: float | None = None, sink: OutputSink | None = None) -> ExecutionResult:
        """Run a command in this sandbox. Timeouts kill that command only."""
        req = ExecRequest(argv=argv, stdin=stdin, env=env or {}, workdir=workdir,
                          timeout_s=timeout_s)
        self._require(SandboxStatus.RUNNING)
        ws = self.workspace
        assert ws is not None
        n = next(self._seq)
        pjson = ws.write_process(f"exec-{n}", req.argv, req.env, req.workdir or self.spec.workdir)
        pid_file = ws.dir / f"exec-{n}.pid"
        log = ws.dir / f"exec-{n}.log"
        before = ws.cgroups.usage()
        t0 = time.monotonic()
        proc = self.driver.exec(self.id, pjson, stdin=bool(req.stdin), log=log,
                                pid_file=pid_file)
        try:
            out = supervise(self.driver, proc, cid=self.id,
                            timeout_s=req.timeout_s or self.spec.limits.timeout_s,
                            cap=self.spec.limits.output_cap_bytes, stdin_data=req.stdin,
                            sink=sink, log_file=log, started=t0,
                            kill=lambda: self.driver.kill_exec(self.id, pid_file))
        finally:
            for p in (pjson, pid_file):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
        err = runtime_failure(self.driver, "exec", out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
        oom = ws.cgroups.oom_kills_since_last() > 0
        if err is not None and not oom:
            # The runtime failed, not the command. If the container died under us, say so.
            if self.refresh_status() is SandboxStatus.STOPPED:
                raise SandboxStateError(f"sandbox {self.id} stopped while running "
                                        f"{req.argv[0]!r}: {err}") from err
            raise err
        after = ws.cgroups.usage()
        cpu = (None if after.cpu_time_ms is None or before.cpu_time_ms is None
               else after.cpu_time_ms - before.cpu_time_ms)
        if oom:
            # The kernel may have killed the init too; the sandbox is then gone.
            self.refresh_status()
        return self.make_result(ws, out, req.argv, oom=oom,
                                usage=ResourceUsage(cpu, after.peak_memory_bytes))

    @staticmethod
    def make_result(ws: Workspace, out: Outcome, argv: Sequence[str], *, oom: bool,
                    usage: ResourceUsage, files: Sequence[str] = (),
                    skipped: Sequence[SkippedFile] = ()) -> ExecutionResult:
        c = out.captured
        exit_code = out.exit_code
        stderr = c.stderr
        start = (command_start_failure(out.runtime_error)
                 if out.runtime_error and exit_code != 0 and not out.killed_by_us and not oom
                 else None)
        if start is not None:
            # The runtime could not start the command: report it as the shell would.
            exit_code, why = start
            cmd = argv[0] if argv else "command"
            stderr = f"closedpaw: {cmd}: {why}\n".encode()
        if out.killed_by_us or oom:
            exit_code = 128 + signal.SIGKILL
        return ExecutionResult(
            sandbox_id=ws.sid, exit_code=exit_code, stdout=c.stdout, stderr=stderr,
            duration_ms=out.duration_ms, isolation=ws.isolation(), timed_out=out.killed_by_us,
            oom_killed=oom, stdout_truncated=c.stdout_truncated,
            stderr_truncated=c.stderr_truncated, stdout_total_bytes=c.stdout_total,
            stderr_total_bytes=c.stderr_total, usage=usage, output_files=tuple(files),
            skipped_files=tuple(skipped),
        )
