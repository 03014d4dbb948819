"""Teardown off the caller's critical path, but guaranteed: a worker thread runs cleanup jobs
in order, and :meth:`Reaper.drain` (called by the manager's ``close`` and at interpreter exit)
waits for all of them."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["Reaper"]

log = logging.getLogger(__name__)
Job = Callable[[], None]


class Reaper:
    def __init__(self, name: str = "closedpaw-reaper") -> None:
        self._q: queue.Queue[tuple[str, Job] | None] = queue.Queue()
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []
        atexit.register(self.drain)

    def submit(self, what: str, job: Job) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name,
                                                daemon=True)
                self._thread.start()
        self._q.put((what, job))

    def _work(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                what, job = item
                try:
                    job()
                except Exception as e:  # keep reaping the rest; report what failed
                    msg = f"cleanup of {what} failed: {e}"
                    self.errors.append(msg)
                    log.warning(msg)
            finally:
                self._q.task_done()

    def drain(self) -> None:
        """Block until every submitted job has run."""
        if self._thread is not None and self._thread.is_alive():
            self._q.join()
