"""Teardown off the caller's critical path, but guaranteed.

A :class:`Reaper` runs cleanup jobs (delete a container, unmount, remove cgroups and state) in
the order they were submitted. Two modes:

* threaded (the library default): a worker thread runs jobs as they arrive and ends after
  :data:`IDLE_EXIT_S` without work (a later job starts a new one), so a process that makes
  many managers does not keep a thread for each; :meth:`Reaper.drain` (called by the
  manager's ``close`` and at interpreter exit) waits for all of them.
* deferred (the CLI): jobs are only queued. :meth:`Reaper.detach` hands them to a detached
  child process (its own session, stdio on /dev/null) and returns at once, so a one-shot
  ``closedpaw run`` exits as soon as the program has; :meth:`Reaper.drain` runs them inline
  instead (used on Ctrl-C, and when a child cannot be forked).

Failures are collected in :attr:`Reaper.errors` and, when ``error_log`` is set, appended to
that file - the only place a detached child can report them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    import queue
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["IDLE_EXIT_S", "Reaper"]

#: seconds a threaded reaper's worker waits for a job before it ends
IDLE_EXIT_S = 5.0

# every reaper still referenced is drained at interpreter exit (weakly held: a reaper that is
# gone has nothing left to drain)
_LIVE: weakref.WeakSet[Reaper] = weakref.WeakSet()


@atexit.register
def _drain_all() -> None:
    for r in list(_LIVE):
        r.drain()

if TYPE_CHECKING:
    from typing import TypeAlias

    Job: TypeAlias = Callable[[], None]


class Reaper:
    def __init__(self, name: str = "closedpaw-reaper", *, deferred: bool = False,
                 error_log: Path | None = None, idle_exit_s: float = IDLE_EXIT_S) -> None:
        # the worker's queue; a deferred reaper (the one-shot CLI) has none, nor imports queue
        self._q: queue.Queue[tuple[str, Job] | None] | None = None
        if not deferred:
            import queue

            self._q = queue.Queue()
        self._name = name
        self._deferred = deferred
        self._pending: list[tuple[str, Job]] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error_log = error_log
        self.errors: list[str] = []
        self._idle_exit_s = idle_exit_s
        _LIVE.add(self)

    def submit(self, what: str, job: Job) -> None:
        if self._deferred:
            with self._lock:
                self._pending.append((what, job))
            return
        assert self._q is not None
        with self._lock:   # the put under the lock: an idle worker ends only on an empty queue
            self._q.put((what, job))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name,
                                                daemon=True)
                self._thread.start()

    def _run(self, what: str, job: Job) -> None:
        try:
            job()
        except Exception as e:  # keep reaping the rest; report what failed
            self._report(f"cleanup of {what} failed: {e}")

    def _report(self, msg: str) -> None:
        self.errors.append(msg)
        if self.error_log is not None:
            with contextlib.suppress(OSError), open(self.error_log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        else:
            import logging  # lazy: only on failure

            logging.getLogger(__name__).warning(msg)

    def _work(self) -> None:
        import queue

        assert self._q is not None
        while True:
            try:
                item = self._q.get(timeout=self._idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._q.empty():
                        self._thread = None
                        return
                continue
            try:
                if item is None:
                    return
                self._run(*item)
            finally:
                self._q.task_done()

    def _take_pending(self) -> list[tuple[str, Job]]:
        with self._lock:
            jobs, self._pending = self._pending, []
        return jobs

    def drain(self) -> None:
        """Block until every submitted job has run (deferred jobs run here, inline)."""
        for what, job in self._take_pending():
            self._run(what, job)
        if self._thread is not None and self._thread.is_alive():
            assert self._q is not None
            self._q.join()

    def detach(self) -> None:
        """Run the deferred jobs in a detached child process and return without waiting.

        The child starts its own session (no terminal signals reach it), puts its stdio on
        /dev/null (a pipe reading our output sees EOF when *we* exit) and leaves with
        ``os._exit`` after the jobs. If no child can be forked, the jobs run inline.
        Threaded reapers just drain: forking a process that has threads is not safe.
        """
        if not self._deferred:
            self.drain()
            return
        jobs = self._take_pending()
        if not jobs:
            return
        try:
            pid = os.fork()
        except OSError:
            for what, job in jobs:
                self._run(what, job)
            return
        if pid != 0:
            return
        code = 0
        try:  # the child: never return into the caller's code
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for what, job in jobs:
                self._run(what, job)
            code = 1 if self.errors else 0
        finally:
            os._exit(code)
