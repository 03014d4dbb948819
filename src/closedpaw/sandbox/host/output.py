"""Capture a process's stdout and stderr with a cap per stream, under a wall-clock deadline.

Bytes past the cap are read and dropped (so the writer never blocks on a full pipe) and the
stream is marked truncated; the total is still counted.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable

from closedpaw._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from closedpaw.sandbox.drivers.base import Process

__all__ = ["Captured", "OutputSink", "pump"]

OutputSink = Callable[[str, bytes], None]
_CHUNK = 65536
DRAIN_GRACE_S = 5.0
QUIET_S = 0.5   # after a kill, draining ends once the pipes were silent this long


class _Stream:
    __slots__ = ("buf", "cap", "name", "total")

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.buf = bytearray()
        self.total = 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.buf)

    def feed(self, data: bytes, sink: OutputSink | None) -> None:
        self.total += len(data)
        room = self.cap - len(self.buf)
        if room > 0:
            kept = data[:room]
            self.buf += kept
            if sink is not None:
                sink(self.name, kept)


class Captured(Record):
    stdout: bytes
    stderr: bytes
    stdout_total: int
    stderr_total: int
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool


def pump(proc: Process, *, cap: int, deadline: float, on_timeout: Callable[[], None],
         stdin_data: bytes = b"", sink: OutputSink | None = None) -> Captured:
    """Read ``proc``'s pipes until both reach EOF, feeding ``stdin_data`` meanwhile. The
    pipes are closed on return.

    When ``deadline`` (a ``time.monotonic()`` value) passes, ``on_timeout`` is called once to
    kill the work; draining then continues for a short grace period.
    """
    sel = selectors.DefaultSelector()
    streams: dict[int, _Stream] = {}
    for name, f in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if f is not None:
            fd = f.fileno()
            os.set_blocking(fd, False)
            streams[fd] = _Stream(name, cap)
            sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin_data)
    in_fd: int | None = None
    if proc.stdin is not None:
        in_fd = proc.stdin.fileno()
        if pending:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
            in_fd = None
    timed_out = False
    hard_stop = None
    last_data = 0.0
    try:
        while any(fd in sel.get_map() for fd in streams):
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                on_timeout()
                hard_stop = time.monotonic() + DRAIN_GRACE_S
                last_data = time.monotonic()
            if hard_stop is not None and (now >= hard_stop or now - last_data >= QUIET_S):
                # killed: stop once the pipes go quiet (what the command left running in
                # the background may hold them open for ever)
                break
            limit = (min(hard_stop, last_data + QUIET_S) if hard_stop is not None
                     else deadline)
            events = sel.select(timeout=max(0.0, limit - now))
            for key, mask in events:
                fd = int(key.fd)
                if mask & selectors.EVENT_WRITE:
                    try:
                        n = os.write(fd, pending[:_CHUNK])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        if proc.stdin is not None:
                            proc.stdin.close()
                        in_fd = None
                    continue
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    continue
                streams[fd].feed(data, sink)
                last_data = time.monotonic()
    finally:
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                f.close()
    out = next((s for s in streams.values() if s.name == "stdout"), _Stream("stdout", cap))
    err = next((s for s in streams.values() if s.name == "stderr"), _Stream("stderr", cap))
    return Captured(bytes(out.buf), bytes(err.buf), out.total, err.total, out.truncated,
                    err.truncated, timed_out)
