"""Run one process under a driver and turn what happened into an ExecutionResult.

Used by one-shot runs (``driver.run``: the process is the container's init) and by
``Sandbox.exec`` (``driver.exec`` into a live container). Whatever happens — normal exit,
timeout, OOM, an exception, Ctrl-C — the process is killed by id before this returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from closedpaw.errors import SpecError
from closedpaw.sandbox.drivers.errors import (
    command_start_failure,
    map_runtime_error,
    missing_workdir,
)
from closedpaw.sandbox.host.output import Captured, OutputSink, pump
from closedpaw.sandbox.host.statedir import SandboxDir
from closedpaw.sandbox.result import ExecutionResult, ResourceUsage, SkippedFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from closedpaw.sandbox.drivers.base import Driver, Process

__all__ = ["Outcome", "make_result", "runtime_failure", "supervise"]

KILL_RETRY_S = 3.0
KILLED_WAIT_S = 1.0   # after a kill, how long the runtime process may take to exit


class Outcome:
    __slots__ = ("captured", "duration_ms", "exit_code", "killed_by_us", "runtime_error")

    def __init__(self, captured: Captured, exit_code: int, duration_ms: float,
                 killed_by_us: bool, runtime_error: str) -> None:
        self.captured = captured
        self.exit_code = exit_code
        self.duration_ms = duration_ms
        self.killed_by_us = killed_by_us
        self.runtime_error = runtime_error


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def supervise(driver: Driver, proc: Process, *, cid: str, timeout_s: float, cap: int,
              stdin_data: bytes, sink: OutputSink | None, log_file: Path | None,
              kill: Callable[[], bool] | None = None, started: float | None = None) -> Outcome:
    """Pump output until exit or deadline; on any failure kill the work before re-raising."""
    t0 = started if started is not None else time.monotonic()
    deadline = t0 + timeout_s
    killed = False

    def do_kill() -> None:
        nonlocal killed
        killed = True
        end = time.monotonic() + KILL_RETRY_S
        while time.monotonic() < end:
            done = kill() if kill is not None else driver.kill(cid, "KILL")
            if done or proc.poll() is not None:
                return
            time.sleep(0.02)
        # The runtime never reported the container: stop the runtime process itself; the
        # caller's teardown deletes the container by id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if proc.pid > 0:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()

    try:
        captured = pump(proc, cap=cap, deadline=deadline, on_timeout=do_kill,
                        stdin_data=stdin_data, sink=sink)
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()) if not killed
                           else KILLED_WAIT_S)
        except Exception:
            if killed:
                # the work is killed, yet the runtime process lingers (it waits for what the
                # command left behind): stop it, so a timeout stays a prompt result
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if proc.pid > 0:
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.kill()
            else:
                do_kill()
            rc = proc.wait(timeout=10)
    except BaseException:
        if proc.poll() is None:
            do_kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        raise
    duration_ms = (time.monotonic() - t0) * 1000
    runtime_error = ""
    if log_file is not None and rc != 0:
        with contextlib.suppress(OSError):
            runtime_error = _runtime_errors(log_file)
    return Outcome(captured, _exit_code(rc), duration_ms, killed, runtime_error)


def _runtime_errors(log_file: Path) -> str:
    """Error lines the runtime wrote to its own log (never the sandboxed program's stderr)."""
    lines = []
    with open(log_file, errors="replace") as f:
        for line in f:
            low = line.lower()
            if '"level":"error"' in low or '"level":"fatal"' in low or "level=error" in low:
                lines.append(line.strip())
    return "\n".join(lines[-5:])


def runtime_failure(driver: Driver, action: str, outcome: Outcome) -> Exception | None:
    """Map a runtime's own failure (not the program's) to an exception, if there was one."""
    if not outcome.runtime_error or command_start_failure(outcome.runtime_error):
        return None
    if missing_workdir(outcome.runtime_error):
        return SpecError("workdir", "cannot be entered in the sandbox: it is missing, not a "
                         "directory, or closed to the sandbox user (create it first, e.g. "
                         "with mkdir -p in an earlier command)")
    return map_runtime_error(driver.name, action, outcome.runtime_error, outcome.exit_code)


def make_result(sd: SandboxDir, out: Outcome, argv: Sequence[str], *, oom: bool,
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
        sandbox_id=sd.sid, exit_code=exit_code, stdout=c.stdout, stderr=stderr,
        duration_ms=out.duration_ms, isolation=sd.isolation(), timed_out=out.killed_by_us,
        oom_killed=oom, stdout_truncated=c.stdout_truncated,
        stderr_truncated=c.stderr_truncated, stdout_total_bytes=c.stdout_total,
        stderr_total_bytes=c.stderr_total, usage=usage, output_files=tuple(files),
        skipped_files=tuple(skipped),
    )
