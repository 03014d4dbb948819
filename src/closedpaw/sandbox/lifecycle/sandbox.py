"""Sandbox: a long-lived container that runs many commands, built from small parts.

``sb.commands.run([...])`` (or ``sb.exec``) runs a command; ``sb.stream([...])`` yields its
output chunks as they come; ``sb.code.run("x = 1")`` runs a cell in a persistent interpreter
(python, node; state is kept between cells); ``sb.files.collect()`` copies ``/output`` back.
Lifecycle: pending -> creating -> running <-> paused -> stopping -> stopped (deleted), or
error. Every transition happens under the sandbox's one state lock (see
docs/sandbox-lifecycle.md): a delete of a sandbox still being created cancels that creation and
waits for it, so ``create()`` only ever returns a running, tracked sandbox. A sandbox whose
teardown failed stays in ``mgr.list()`` with status error until ``cleanup()`` or ``gc``
removes what is left. ``with manager.create(spec) as sb:`` deletes it on exit.

When the image has ``/usr/bin/python3`` (the host, python and multi images), the sandbox's
init is the in-sandbox agent (:mod:`closedpaw.sandbox.agent.inside.cp_agent`), started in the
foreground by ``runc run``/``runsc run`` with a pipe pair as its stdin/stdout: commands start
in ~1 ms instead of a ``runc exec``/``runsc exec`` each. Images without python3 (node, shell)
keep the idle shell init and run each command with the runtime's ``exec`` (``agent`` is then
False on the sandbox and in ``sb.info()``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from closedpaw.errors import (
    AgentProtocolError,
    ClosedPawError,
    SandboxStateError,
    SandboxTimeout,
    SnapshotError,
    SpecError,
)
from closedpaw.sandbox.agent.channel import T_CELL, T_EXEC, AgentChannel
from closedpaw.sandbox.agent.stream import ExecStream
from closedpaw.sandbox.drivers.base import Driver, Process
from closedpaw.sandbox.host.files import collect_output
from closedpaw.sandbox.host.output import OutputSink
from closedpaw.sandbox.host.statedir import SandboxDir, new_sandbox_id, storage_error
from closedpaw.sandbox.lifecycle.execute import make_result, runtime_failure, supervise
from closedpaw.sandbox.lifecycle.registry import Registry
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.result import CodeResult, ExecutionResult, ResourceUsage, SkippedFile
from closedpaw.sandbox.spec import MIB, ExecRequest, SandboxSpec

__all__ = ["AGENT_ARGV", "INIT_ARGV", "Sandbox"]

# The idle init of a long-lived sandbox without python3: exits on TERM, and its `wait` reaps
# orphans.
INIT_ARGV = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done")
# The agent init: the image's own python3, isolated (-I) and without site (-S).
AGENT_ARGV = ("/usr/bin/python3", "-I", "-S", "/.closedpaw/cp_agent.py")
AGENT_DIR = Path(__file__).resolve().parent.parent / "agent" / "inside"
AGENT_START_TIMEOUT_S = 30.0
STATEFUL_LANGS = ("python", "node")
# How long delete() waits for a creation it cancelled (the slowest step is the agent start).
CREATE_WAIT_S = AGENT_START_TIMEOUT_S + 90.0
INIT_EXIT_S = 3.0   # teardown gives a closed agent this long to exit on its own
_LIVE = (SandboxStatus.RUNNING, SandboxStatus.PAUSED)


class Commands:
    """Runs commands in its sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def run(self, argv: Sequence[str], *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, workdir: str | None = None,
            timeout_s: float | None = None, sink: OutputSink | None = None) -> ExecutionResult:
        return self._sb.exec(argv, stdin=stdin, env=env, workdir=workdir, timeout_s=timeout_s,
                             sink=sink)

    def stream(self, argv: Sequence[str], *, stdin: bytes = b"",
               env: Mapping[str, str] | None = None, workdir: str | None = None,
               timeout_s: float | None = None) -> ExecStream:
        return self._sb.stream(argv, stdin=stdin, env=env, workdir=workdir,
                               timeout_s=timeout_s)


class Code:
    """Runs code in its sandbox.

    ``run("x = 1")`` then ``run("print(x + 1)")``: python (the default) and node cells run in
    a persistent interpreter inside the sandbox, like a notebook kernel; the result is a
    :class:`~closedpaw.sandbox.result.CodeResult` with stdout, stderr, ``value`` (the repr of
    the last expression) and ``error`` (with its traceback; ``exit_code`` is then 1). A cell
    that times out, or an interpreter that dies, is reported (``restarted``) and the next cell
    starts a fresh interpreter. ``run(lang, code, args=..., stdin=..., env=...)`` with any of
    those (or ``stateful=False``, or bash, or an image without python3) runs the code as a
    file instead: written under ``/tmp/.closedpaw-code`` by the sandbox's own shell (the host
    never writes into a live sandbox), then run by the language's interpreter, stateless.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox
        self._n = itertools.count(1)
        self._locks = {lang: threading.Lock() for lang in STATEFUL_LANGS}

    def run(self, lang: str, code: str | None = None, *, args: Sequence[str] = (),
            stdin: bytes = b"", env: Mapping[str, str] | None = None,
            timeout_s: float | None = None, sink: OutputSink | None = None,
            stateful: bool | None = None) -> ExecutionResult:
        from closedpaw.sandbox.policy import LANGUAGES

        if code is None:  # run("x = 1"): a python cell
            lang, code = "python", lang
        if lang not in LANGUAGES:
            raise SpecError("lang", f"{lang!r} is not one of {', '.join(LANGUAGES)}")
        if not isinstance(code, str):
            raise SpecError("code", "must be text")
        can = lang in STATEFUL_LANGS and self._sb.agent
        if stateful is None:
            stateful = can and not args and not stdin and not env
        elif stateful and not can:
            raise SpecError("stateful", f"{lang} cells need the in-sandbox agent and a "
                            "python or node interpreter (this sandbox: "
                            f"{'agent' if self._sb.agent else 'no agent: image lacks python3'})")
        elif stateful and (args or stdin or env):
            raise SpecError("stateful", "cells take no args, stdin or env")
        if stateful:
            with self._locks[lang]:
                return self._sb.cell(lang, code, timeout_s=timeout_s, sink=sink)
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

    def collect(self, dest: Path | None = None, *, overwrite: bool | None = None,
                timeout_s: float | None = None) -> tuple[list[str], list[SkippedFile]]:
        """Copy ``/output`` now, bounded by the /output cap and ``timeout_s`` (default: the
        spec's timeout) even while the sandbox keeps writing; ``overwrite`` (default: the
        spec's ``output_overwrite``) lets it replace existing entries of ``dest``."""
        sd = self._sb.state_dir
        spec = self._sb.spec
        target = dest or spec.output_dir
        if sd is None or sd.output_mount is None or target is None:
            raise SandboxStateError("this sandbox has no /output (set SandboxSpec.output_dir)")
        return collect_output(
            sd.output_mount, Path(target), max_bytes=spec.limits.output_dir_mb * MIB,
            deadline=time.monotonic() + (spec.limits.timeout_s if timeout_s is None
                                         else timeout_s),
            overwrite=spec.output_overwrite if overwrite is None else overwrite)


class Sandbox:
    """Created by :meth:`SandboxManager.create` (or :meth:`launch`); not constructed directly."""

    def __init__(self, registry: Registry[Sandbox], driver: Driver, spec: SandboxSpec,
                 sid: str) -> None:
        self.registry = registry
        self.driver = driver
        self.spec = spec
        self.id = sid
        self.status = SandboxStatus.PENDING
        self.created_at = time.time()
        self.state_dir: SandboxDir | None = None
        self.commands = Commands(self)
        self.files = Files(self)
        self.code = Code(self)
        # The state lock: every status transition (start, pause, resume, stop, delete, the
        # agent breaking, a failed teardown) happens under it.
        self._lock = threading.RLock()
        self._delete_lock = threading.Lock()
        self._created = threading.Event()   # start() finished, either way
        self._cancel = False                # delete() asked while creating
        self._leftover: tuple[SandboxDir | None, Process | None] | None = None
        self.error: str | None = None       # why the sandbox is in status error
        self._kill_on_resume: list[str] = []  # pids of runtime execs timed out while paused
        self._seq = itertools.count(1)
        self.agent = False            # commands go through the in-sandbox agent
        self._channel: AgentChannel | None = None
        self._init: Process | None = None
        self.restored = False           # resumed from a snapshot rather than booted

    def __repr__(self) -> str:
        return f"<Sandbox {self.id} {self.driver.name} {self.status.value}>"

    @classmethod
    def launch(cls, registry: Registry[Sandbox], spec: SandboxSpec, *,
               runtime: str | None = None, restore_from: Path | None = None,
               agent: bool = True) -> Sandbox:
        """Create, register and start a sandbox under the registry's cap (what
        :meth:`SandboxManager.create`, pools and snapshots do)."""
        driver = registry.driver(runtime)
        sb = cls(registry, driver, spec, new_sandbox_id())
        registry.admit(sb)  # tracked (status creating) and counted once under the cap
        try:
            sb.start(restore_from=restore_from, agent=agent)
        except BaseException:
            sb._created.set()
            if sb.state_dir is None and sb._leftover is None:
                registry.forget(sb.id)
            raise
        return sb

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, restore_from: Path | None = None, *, agent: bool = True) -> None:
        """Boot the sandbox, or with ``restore_from`` (a runsc checkpoint image of a sandbox
        of the same spec) resume the checkpointed processes. Either way the bundle is built
        and checked the same way. ``agent=False`` (and any restore) keeps the idle shell init
        and the runtime's ``exec``: snapshots are taken and restored that way, since the
        agent's channel is a pipe to one host process and cannot be checkpointed."""
        with self._lock:
            if self.status is not SandboxStatus.PENDING:
                raise SandboxStateError(f"sandbox {self.id} is {self.status.value}, not pending")
            self.status = SandboxStatus.CREATING
        try:
            self._check_cancel()
            try:
                sd = self.state_dir = SandboxDir.allocate(self.registry.settings, self.id,
                                                         self.spec, self.driver.features())
            except OSError as e:
                raise storage_error(e, self.registry.settings.state_dir) from e
            self._check_cancel()
            if (agent and restore_from is None and self.driver.name in ("runc", "runsc")
                    and sd.has_program(AGENT_ARGV[0])):
                self._start_agent(sd)
            else:
                sd.build(list(INIT_ARGV), {}, "/")
                if restore_from is None:
                    self.driver.create(self.id, sd.bundle)
                else:
                    restore = getattr(self.driver, "restore", None)
                    if restore is None:
                        raise SnapshotError(f"the {self.driver.name} driver cannot restore "
                                            "snapshots; use runsc")
                    restore(self.id, sd.bundle, restore_from)
                    self.restored = True
            with self._lock:
                self._check_cancel()
                self.status = SandboxStatus.RUNNING
        except BaseException as e:
            with self._lock:
                cancelled = self._cancel
                self.status = SandboxStatus.STOPPED if cancelled else SandboxStatus.ERROR
                if not cancelled:
                    self.error = str(e)[:500] or type(e).__name__
            self._teardown()
            full = storage_error(e, self.registry.settings.state_dir)
            if full is not e:
                raise full from e
            raise
        finally:
            self._created.set()

    def _check_cancel(self) -> None:
        if self._cancel:
            raise SandboxStateError(f"sandbox {self.id} was deleted while it was being "
                                    "created")

    def _start_agent(self, sd: SandboxDir) -> None:
        sd.agent_dir = AGENT_DIR
        sd.build(list(AGENT_ARGV), {}, "/")
        log = sd.dir / "runtime.log"
        self._init = self.driver.run(self.id, sd.bundle, stdin=True, log=log)
        self._channel = AgentChannel(self._init, self.id, on_broken=self._agent_broken)
        try:
            self._channel.wait_ready(AGENT_START_TIMEOUT_S)
        except AgentProtocolError as e:
            from closedpaw.sandbox.lifecycle.execute import _runtime_errors

            detail = ""
            with contextlib.suppress(OSError):
                detail = _runtime_errors(log)
            if detail:
                from closedpaw.sandbox.drivers.errors import map_runtime_error

                raise map_runtime_error(self.driver.name, "create", detail, 1) from e
            raise
        self.agent = True

    def _agent_broken(self, reason: str) -> None:
        """The channel failed (called from its reader or a writer): end this sandbox, in a
        thread of its own, since a transition in progress (delete, pause) may hold the state
        lock and the reader must keep draining meanwhile."""
        if self._lock.acquire(blocking=False):  # the usual case: at once
            try:
                self._end_broken(reason)
            finally:
                self._lock.release()
            return
        threading.Thread(target=self._end_broken, args=(reason,), daemon=True,
                         name=f"broken-{self.id}").start()

    def _end_broken(self, reason: str) -> None:
        with self._lock:
            if self.state_dir is None or self.status in (
                    SandboxStatus.STOPPING, SandboxStatus.STOPPED, SandboxStatus.ERROR,
                    SandboxStatus.CREATING, SandboxStatus.PENDING):
                return  # start() and delete() end the sandbox themselves
            self.status = SandboxStatus.ERROR
            self.error = f"agent channel failed: {reason}"[:500]
            self._teardown()  # its reaper job force-deletes the container by id

    def refresh_status(self) -> SandboxStatus:
        """Ask the runtime; a container that died on its own is reported stopped."""
        with self._lock:
            if self.status in _LIVE:
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
        the Sentry and gofer of the user-space kernel). The peak is since the last command
        through the agent where the kernel lets it be reset (see README "Resource usage")."""
        sd = self.state_dir
        if sd is None:
            raise SandboxStateError(f"sandbox {self.id} is {self.status.value}; its cgroups "
                                    "are gone")
        return sd.cgroups.usage()

    def pause(self) -> None:
        """Freeze every process. Commands in flight keep their deadline: one that passes
        while the sandbox is paused ends with a timed-out result (that command only)."""
        with self._lock:
            self._require(SandboxStatus.RUNNING)
            self.driver.pause(self.id)
            self.status = SandboxStatus.PAUSED

    def resume(self) -> None:
        with self._lock:
            self._require(SandboxStatus.PAUSED)
            self.driver.resume(self.id)
            self.status = SandboxStatus.RUNNING
            pids, self._kill_on_resume = self._kill_on_resume, []
            sd = self.state_dir
            for i, pid in enumerate(pids):  # commands whose deadline passed while paused
                if sd is None:
                    break
                f = sd.dir / f"kill-on-resume-{i}.pid"
                with contextlib.suppress(Exception):
                    f.write_text(pid)
                    self.driver.kill_exec(self.id, f)
                with contextlib.suppress(OSError):
                    f.unlink()

    @property
    def paused(self) -> bool:
        return self.status is SandboxStatus.PAUSED

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process, wait up to ``grace_s``, then SIGKILL."""
        with self._lock:
            self._stop(grace_s)

    def _stop(self, grace_s: float) -> None:
        if self.status in (SandboxStatus.STOPPED, SandboxStatus.PENDING, SandboxStatus.ERROR,
                           SandboxStatus.CREATING):
            return
        if self.status is SandboxStatus.PAUSED:
            # thaw first: runsc panics on deleting a paused container, and a frozen agent
            # cannot exit
            with contextlib.suppress(Exception):
                self.driver.resume(self.id)
        self.status = SandboxStatus.STOPPING
        if self._init is not None:
            self._stop_agent(grace_s)
            return
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

    def _stop_agent(self, grace_s: float) -> None:
        """Close the channel: the agent kills its commands and exits, and the foreground
        runtime process then removes the container itself (a `kill --all` would race it)."""
        init = self._init
        assert init is not None and self._channel is not None
        self._channel.close()
        try:
            init.wait(timeout=grace_s)
        except Exception:
            with contextlib.suppress(Exception):
                self.driver.kill(self.id, "KILL", all_processes=True)
            try:
                init.wait(timeout=10)
            except Exception as e:
                self.status = SandboxStatus.ERROR
                raise SandboxTimeout(f"sandbox {self.id} did not stop after SIGKILL") from e
        self.status = SandboxStatus.STOPPED

    def _signal(self, sig: str) -> bool:
        found = self.driver.kill(self.id, sig, all_processes=True)
        if found and self.restored:
            # runsc (2022) `kill --all` misses the processes of a restored container; its
            # init's death ends every process of the container, so signal the init too.
            self.driver.kill(self.id, sig)
        return found

    def delete(self) -> None:
        """Stop (if needed), collect /output if configured, and remove everything. A sandbox
        still being created has its creation cancelled (and waited for); one whose earlier
        teardown failed has it retried."""
        with self._lock:
            creating = self.status in (SandboxStatus.PENDING, SandboxStatus.CREATING)
            if creating:
                self._cancel = True
        if creating and not self._created.wait(CREATE_WAIT_S):
            raise SandboxTimeout(f"sandbox {self.id} was still being created after "
                                 f"{CREATE_WAIT_S:.0f} s")
        with self._delete_lock, self._lock:
            try:
                if self.status in (SandboxStatus.RUNNING, SandboxStatus.PAUSED,
                                   SandboxStatus.STOPPING):
                    self._stop(10.0)
            finally:
                sd = self.state_dir
                if sd is not None and sd.output_mount is not None and self.spec.output_dir:
                    with contextlib.suppress(Exception):
                        self.files.collect()   # bounded by the cap and the spec's timeout
                self._teardown()

    def delete_soon(self, after_s: float = 0.0) -> None:
        """:meth:`delete` on the reaper's thread; returns at once. For a caller that has what
        it needed (a result) and should not wait for the container to stop: the sandbox
        stays listed, and counted against ``max_sandboxes``, until it is gone; the manager's
        ``close``/``cleanup`` (and interpreter exit) wait for it. A failure is reported as
        the reaper's other failures are, and leaves the sandbox listed with status
        ``error`` for ``cleanup``/``gc``. ``after_s``: not before this many seconds from
        now (the caller's own work first)."""
        not_before = time.monotonic() + max(0.0, after_s)

        def job() -> None:
            left = not_before - time.monotonic()
            if left > 0:
                time.sleep(left)
            with self._lock:   # deleted meanwhile (cleanup): nothing left to do
                gone = (self.status is SandboxStatus.STOPPED and self.state_dir is None
                        and self._leftover is None)
            if not gone:
                self.delete()
        self.registry.reaper.submit(f"sandbox {self.id}", job)

    def _teardown(self) -> None:
        """Forget the sandbox and hand its removal to the reaper (called under the state
        lock, or by start() before anyone else can see the sandbox running). The job thaws
        and kills what is left before it deletes; if it fails, the sandbox comes back to the
        registry with status error, and its ownership lock is released so ``gc`` (of any
        process) may remove the leftovers too; the next delete()/cleanup() retries."""
        sd, self.state_dir = self.state_dir, None
        init, self._init = self._init, None
        retry = self._leftover is not None
        if self._leftover is not None:
            old_sd, old_init = self._leftover
            sd, init, self._leftover = sd or old_sd, init or old_init, None
        driver, sid = self.driver, self.id
        if self._channel is not None:
            self._channel.close()

        def job() -> None:
            try:
                if init is not None:
                    # the agent exits once its channel is closed, and the foreground runtime
                    # then removes the container itself: a delete now would race it
                    with contextlib.suppress(Exception):
                        init.wait(timeout=INIT_EXIT_S)
                _remove_container(driver, sid)
                if init is not None:
                    _end_init(init)
                if sd is not None:
                    sd.teardown()
            except BaseException as e:
                self._teardown_failed(sd, init, e)
                raise
            if retry:  # what an earlier teardown left is gone now
                with self._lock:
                    self.status = SandboxStatus.STOPPED
        self.registry.forget(sid)
        if self.status is not SandboxStatus.ERROR:
            self.status = SandboxStatus.STOPPED
        self.registry.reaper.submit(f"sandbox {sid}", job)

    def _teardown_failed(self, sd: SandboxDir | None, init: Process | None,
                         err: BaseException) -> None:
        with self._lock:
            self.status = SandboxStatus.ERROR
            self.error = f"teardown failed: {err}"[:500]
            self._leftover = (sd, init)
            if sd is not None:
                sd.release_ownership()
            self.registry.add(self)

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
        if self.agent:
            return self.stream(argv, stdin=stdin, env=env, workdir=workdir,
                               timeout_s=timeout_s).drain(sink)
        req = ExecRequest(argv=argv, stdin=stdin, env=env or {}, workdir=workdir,
                          timeout_s=timeout_s)
        sd = self._live_dir()
        try:
            return self._exec_runtime(sd, req, sink)
        except (OSError, ClosedPawError) as e:
            if self.status in _LIVE or isinstance(e, SpecError):
                raise
            raise self._gone(req.argv) from e

    def _kill_exec(self, pid_file: Path) -> bool:
        """Kill one runtime-exec'd command. In a paused sandbox the kill may not land (runsc)
        or lands only on thaw (runc): it is repeated by resume()."""
        with self._lock:
            if self.status is SandboxStatus.PAUSED:
                with contextlib.suppress(OSError, ValueError):
                    self._kill_on_resume.append(pid_file.read_text().strip())
                with contextlib.suppress(Exception):
                    self.driver.kill_exec(self.id, pid_file)
                return True
        return self.driver.kill_exec(self.id, pid_file)

    def _gone(self, argv: Sequence[str]) -> SandboxStateError:
        why = f": {self.error}" if self.error else ""
        return SandboxStateError(f"sandbox {self.id} was {self.status.value} while running "
                                 f"{(argv or ['?'])[0]!r}{why}")

    def _live_dir(self) -> SandboxDir:
        self._require(SandboxStatus.RUNNING)
        sd = self.state_dir
        if sd is None:
            raise SandboxStateError(f"sandbox {self.id} is {self.status.value}")
        return sd

    def _exec_runtime(self, sd: SandboxDir, req: ExecRequest,
                      sink: OutputSink | None) -> ExecutionResult:
        n = next(self._seq)
        pjson = sd.write_process(f"exec-{n}", req.argv, req.env, req.workdir or self.spec.workdir)
        pid_file = sd.dir / f"exec-{n}.pid"
        log = sd.dir / f"exec-{n}.log"
        before = sd.cgroups.usage()
        t0 = time.monotonic()
        proc = self.driver.exec(self.id, pjson, stdin=bool(req.stdin), log=log,
                                pid_file=pid_file)
        try:
            out = supervise(self.driver, proc, cid=self.id,
                            timeout_s=req.timeout_s or self.spec.limits.timeout_s,
                            cap=self.spec.limits.output_cap_bytes, stdin_data=req.stdin,
                            sink=sink, log_file=log, started=t0,
                            kill=lambda: self._kill_exec(pid_file))
        finally:
            for p in (pjson, pid_file):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
        if self.status not in _LIVE and (out.runtime_error or out.killed_by_us
                                         or out.exit_code in (126, 127)
                                         or out.exit_code > 128):
            # deleted under us: the runtime's complaint, or the signal of our stop, is not
            # the command's result
            raise self._gone(req.argv)
        err = runtime_failure(self.driver, "exec", out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
        oom = sd.cgroups.oom_kills_since_last() > 0
        if err is not None and not oom:
            # The runtime failed, not the command. If the container died under us, say so.
            if self.refresh_status() is SandboxStatus.STOPPED:
                raise SandboxStateError(f"sandbox {self.id} stopped while running "
                                        f"{req.argv[0]!r}: {err}") from err
            raise err
        after = sd.cgroups.usage()
        cpu = (None if after.cpu_time_ms is None or before.cpu_time_ms is None
               else after.cpu_time_ms - before.cpu_time_ms)
        if oom:
            # The kernel may have killed the init too; the sandbox is then gone.
            self.refresh_status()
        return make_result(sd, out, req.argv, oom=oom,
                                usage=ResourceUsage(cpu, after.peak_memory_bytes))

    def stream(self, argv: Sequence[str], *, stdin: bytes = b"",
               env: Mapping[str, str] | None = None, workdir: str | None = None,
               timeout_s: float | None = None) -> ExecStream:
        """Start a command and return an :class:`ExecStream` of its output chunks
        (``for stream, data in sb.stream([...])`` or ``async for``); ``.result`` holds the
        :class:`ExecutionResult` afterwards. Needs the agent (images with python3)."""
        req = ExecRequest(argv=argv, stdin=stdin, env=env or {}, workdir=workdir,
                          timeout_s=timeout_s)
        if not self.agent:
            raise SandboxStateError(f"sandbox {self.id} has no agent (its image lacks "
                                    "/usr/bin/python3): use exec(..., sink=...) to stream")
        sd = self._live_dir()
        from closedpaw.sandbox.bundle.oci import merge_env

        timeout = req.timeout_s or self.spec.limits.timeout_s
        cap = self.spec.limits.output_cap_bytes
        return self._open(sd, T_EXEC, {
            "argv": list(req.argv), "cwd": req.workdir or self.spec.workdir,
            "env": dict(e.split("=", 1) for e in merge_env(self.spec.env, req.env)),
            "stdin": bool(req.stdin), "timeout_ms": timeout * 1000, "cap": cap,
        }, list(req.argv), timeout, cap, req.stdin)

    def cell(self, lang: str, code: str, *, timeout_s: float | None = None,
             sink: OutputSink | None = None) -> CodeResult:
        """Run one code cell in this sandbox's persistent ``lang`` interpreter (see
        :class:`Code`; use ``sb.code.run``, which also serialises cells per language)."""
        if not self.agent or lang not in STATEFUL_LANGS:
            raise SandboxStateError(f"sandbox {self.id} cannot run {lang} cells")
        sd = self._live_dir()
        timeout = timeout_s or self.spec.limits.timeout_s
        cap = self.spec.limits.output_cap_bytes
        res = self._open(sd, T_CELL, {"lang": lang, "code": code, "timeout_ms": timeout * 1000,
                                       "cap": cap}, [lang], timeout, cap, b"").drain(sink)
        if not isinstance(res, CodeResult):   # the agent ended the cell as a process
            raise AgentProtocolError(f"the {lang} kernel of sandbox {self.id} ended the cell "
                                     f"without a result (exit {res.exit_code})")
        return res

    def _open(self, sd: SandboxDir, typ: int, payload: dict[str, object], argv: list[str],
              timeout: float, cap: int, stdin: bytes) -> ExecStream:
        ch = self._channel
        if ch is None:
            raise SandboxStateError(f"sandbox {self.id} is {self.status.value}")
        try:
            sd.cgroups.reset_peak()
            before = sd.cgroups.usage()
        except OSError as e:  # its cgroups went away: deleted under us
            raise self._gone(argv) from e

        def finish(_: ExecStream) -> ResourceUsage:
            after = sd.cgroups.usage()
            cpu = (None if after.cpu_time_ms is None or before.cpu_time_ms is None
                   else after.cpu_time_ms - before.cpu_time_ms)
            return ResourceUsage(cpu, after.peak_memory_bytes)

        def oom() -> bool:
            hit = sd.cgroups.oom_kills_since_last() > 0
            if hit:
                if self.status is SandboxStatus.ERROR:  # the OOM killer ended it
                    self.status = SandboxStatus.STOPPED
                self.refresh_status()
            return hit
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            r = ch.open(typ, payload, cap, deadline=deadline)
            try:
                if stdin:
                    ch.send_stdin(r, stdin, deadline=deadline)
            except BaseException:
                ch.finish(r)
                raise
        except AgentProtocolError:
            if ch.closed_by_host and self.status not in _LIVE:
                raise self._gone(argv) from None  # deleted (or stopped) meanwhile
            raise
        return ExecStream(ch, r, sid=self.id, argv=argv, isolation=sd.isolation(),
                          timeout_s=timeout, cap=cap, finish=finish, oom=oom,
                          paused=lambda: self.status is SandboxStatus.PAUSED,
                          gone=lambda: None if self.status in _LIVE else self._gone(argv),
                          started=t0, is_cell=typ == T_CELL)


def _remove_container(driver: Driver, sid: str) -> None:
    """Thaw, kill and delete container ``sid`` if it still exists; one retry, since runsc
    can miss its own deadline while the container is still stopping."""
    for attempt in range(2):
        st = driver.state(sid)
        if st is None:
            return
        if st == "paused":  # runsc panics deleting a paused container; runc cannot kill it
            with contextlib.suppress(Exception):
                driver.resume(sid)
        with contextlib.suppress(Exception):
            driver.kill(sid, "KILL", all_processes=True)
        try:
            driver.delete(sid)
            return
        except Exception:
            if attempt:
                raise
            time.sleep(0.5)


def _end_init(init: Process) -> None:
    """Reap the foreground runtime process of an agent sandbox (its container is deleted)."""
    try:
        init.wait(timeout=10)
    except Exception:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(init.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            init.kill()
            init.wait(timeout=10)
    for f in (init.stdin, init.stdout, init.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
