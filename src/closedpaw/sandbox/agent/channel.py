"""Host side of the in-sandbox agent's channel: framing, validation, request multiplexing.

The agent (:mod:`closedpaw.sandbox.agent.inside.cp_agent`) is PID 1 of a long-lived sandbox; its
stdin/stdout are a pipe pair held by the foreground ``runc run``/``runsc run`` the host
started. Everything the agent sends is untrusted: one reader thread per sandbox reads frames
with a hard cap per frame (``MAX_PAYLOAD``), checks the type, the request id, the sequence
number and each request's byte budget (its output cap per stream), and parses control payloads
with a size bound. Any violation marks the channel broken, fails every pending request with a
:class:`~closedpaw.errors.AgentProtocolError`, and calls ``on_broken`` (the sandbox then kills
and deletes its container). Memory held per sandbox is bounded by the frame cap plus the caps
of the requests in flight. The agent's own stderr is kept only as a short tail for diagnostics.
"""

from __future__ import annotations

import collections
import contextlib
import json
import marshal
import os
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from closedpaw.errors import AgentProtocolError
from closedpaw.sandbox.drivers.base import Process

__all__ = ["HEADER", "MAX_PAYLOAD", "AgentChannel", "Event", "Request"]

HEADER = struct.Struct(">BBHIII")
MAX_PAYLOAD = 256 * 1024
T_EXEC, T_STDIN, T_KILL, T_CELL = 1, 2, 3, 4
T_READY, T_OUT, T_ERR, T_EXIT, T_RESULT = 16, 17, 18, 19, 20
_FROM_AGENT = {T_READY, T_OUT, T_ERR, T_EXIT, T_RESULT}
STDERR_TAIL = 8192
_MAX_RID = 0xFFFFFFFF


@dataclass(frozen=True)
class Event:
    """One thing that happened to a request: ``kind`` is "stdout", "stderr", "exit",
    "result" or "broken"; ``data`` holds output bytes, ``info`` the parsed control payload."""

    kind: str
    data: bytes = b""
    info: dict[str, Any] | None = None


_KIND = {T_OUT: "stdout", T_ERR: "stderr", T_EXIT: "exit", T_RESULT: "result"}


class Request:
    """Frames for one request id, delivered in order to whoever consumes :attr:`events`."""

    def __init__(self, rid: int, cap: int) -> None:
        self.rid = rid
        self.cap = cap
        self.seq = 0
        self.got = {T_OUT: 0, T_ERR: 0}
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.done = False


class AgentChannel:
    """Talks to one agent over ``proc``'s stdin/stdout; see the module docstring."""

    def __init__(self, proc: Process, name: str,
                 on_broken: Callable[[str], None] | None = None) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.name = name
        self.on_broken = on_broken
        self.broken: str | None = None
        self.closing = False
        self._wfd = proc.stdin.fileno()
        self._rfd = proc.stdout.fileno()
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._reqs: dict[int, Request] = {}
        self._next = 1
        self._ready = threading.Event()
        self.ready_info: dict[str, Any] = {}
        self._stderr = collections.deque[bytes]()
        self._stderr_len = 0
        self._reader = threading.Thread(target=self._read_loop, name=f"agent-{name}",
                                        daemon=True)
        self._reader.start()
        self._err_reader: threading.Thread | None = None
        if proc.stderr is not None:
            self._err_reader = threading.Thread(target=self._stderr_loop, daemon=True,
                                                name=f"agent-err-{name}")
            self._err_reader.start()

    # -- diagnostics -------------------------------------------------------------------------
    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-STDERR_TAIL:]

    def _stderr_loop(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            self._stderr.append(data)
            self._stderr_len += len(data)
            while self._stderr_len > STDERR_TAIL and len(self._stderr) > 1:
                self._stderr_len -= len(self._stderr.popleft())

    # -- start-up ---------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        if not self._ready.wait(timeout_s):
            self.fail(f"the agent did not start within {timeout_s:.0f} s")
        if self.broken is not None:
            raise AgentProtocolError(self._message(self.broken))
        return self.ready_info

    # -- requests ----------------------------------------------------------------------------
    def open(self, typ: int, payload: dict[str, Any], cap: int) -> Request:
        """Send a request (EXEC or CELL) and return its handle."""
        with self._lock:
            if self.broken is not None:
                raise AgentProtocolError(self._message(self.broken))
            rid = self._next
            self._next = 1 if self._next >= _MAX_RID else self._next + 1
            req = Request(rid, cap)
            self._reqs[rid] = req
        body = marshal.dumps(payload)  # the agent trusts the host; the reverse stays JSON
        if len(body) > MAX_PAYLOAD:
            with self._lock:
                self._reqs.pop(rid, None)
            from closedpaw.errors import SpecError

            raise SpecError("request", f"is {len(body)} bytes encoded; the agent takes at "
                            f"most {MAX_PAYLOAD} (put large data in stdin or /input)")
        self.send(typ, rid, body)
        return req

    def send(self, typ: int, rid: int, payload: bytes = b"") -> None:
        frames = [HEADER.pack(typ, 0, 0, rid, 0, len(payload)) + payload]
        self._write(frames)

    def send_stdin(self, req: Request, data: bytes) -> None:
        """Stream ``data`` then EOF to the request's stdin, in frames of at most the cap."""
        frames = [HEADER.pack(T_STDIN, 0, 0, req.rid, 0, len(data[i:i + MAX_PAYLOAD]))
                  + data[i:i + MAX_PAYLOAD] for i in range(0, len(data), MAX_PAYLOAD)]
        frames.append(HEADER.pack(T_STDIN, 0, 0, req.rid, 0, 0))
        self._write(frames)

    def _write(self, frames: list[bytes]) -> None:
        with self._wlock:
            try:
                for f in frames:
                    view = memoryview(f)
                    while view:
                        view = view[os.write(self._wfd, view):]
            except OSError as e:
                self.fail(f"the channel to the agent closed ({e.strerror or e})")
                raise AgentProtocolError(self._message(self.broken or "")) from None

    def finish(self, req: Request) -> None:
        with self._lock:
            self._reqs.pop(req.rid, None)

    # -- reading -------------------------------------------------------------------------------
    def _read_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                data = os.read(self._rfd, min(n - len(buf), 1 << 20))
            except OSError:
                return None
            if not data:
                return None
            buf += data
        return bytes(buf)

    def _read_loop(self) -> None:
        try:
            while self.broken is None:
                head = self._read_exact(HEADER.size)
                if head is None:
                    self.fail("the agent closed its channel (it exited or the sandbox died)"
                              if not self.closing else "the sandbox is stopping")
                    return
                typ, flags, reserved, rid, seq, n = HEADER.unpack(head)
                if n > MAX_PAYLOAD:
                    self.fail(f"oversized frame ({n} bytes > {MAX_PAYLOAD})")
                    return
                if typ not in _FROM_AGENT or flags or reserved:
                    self.fail(f"malformed frame header (type {typ}, flags {flags}, "
                              f"reserved {reserved})")
                    return
                payload = self._read_exact(n) if n else b""
                if payload is None:
                    self.fail(f"truncated frame (header promised {n} bytes)")
                    return
                self._dispatch(typ, rid, seq, payload)
        except Exception as e:  # never let a frame take the host process down
            self.fail(f"unexpected {type(e).__name__} while reading the channel: {e}")

    def _dispatch(self, typ: int, rid: int, seq: int, payload: bytes) -> None:
        if typ == T_READY:
            if self._ready.is_set() or rid != 0:
                self.fail("unexpected READY frame")
                return
            self.ready_info = self._parse(payload) or {}
            self._ready.set()
            return
        if not self._ready.is_set():
            self.fail("frame before READY")
            return
        with self._lock:
            req = self._reqs.get(rid)
        if req is None or req.done:
            self.fail(f"frame for unknown request {rid}")
            return
        if seq != req.seq:
            self.fail(f"request {rid}: sequence {seq}, expected {req.seq}")
            return
        req.seq += 1
        if typ in (T_OUT, T_ERR):
            req.got[typ] += len(payload)
            if req.got[typ] > req.cap:
                self.fail(f"request {rid}: more output than its cap of {req.cap} bytes")
                return
            req.events.put(Event(_KIND[typ], payload))
            return
        info = self._parse(payload)
        if info is None:
            return
        req.done = True
        req.events.put(Event(_KIND[typ], info=info))

    def _parse(self, payload: bytes) -> dict[str, Any] | None:
        try:
            info = json.loads(payload)
        except ValueError:
            self.fail("malformed control payload (not JSON)")
            return None
        if not isinstance(info, dict):
            self.fail("malformed control payload (not an object)")
            return None
        return info

    # -- failure -------------------------------------------------------------------------------
    def _message(self, reason: str) -> str:
        tail = self.stderr_tail().strip()
        extra = f"; agent stderr: {tail[-500:]}" if tail else ""
        return f"sandbox {self.name}: agent channel failed: {reason}{extra}"

    def fail(self, reason: str) -> None:
        """Mark the channel broken (first reason wins) and fail every pending request."""
        with self._lock:
            if self.broken is not None:
                return
            self.broken = reason
            reqs = list(self._reqs.values())
        self._ready.set()
        for r in reqs:
            r.events.put(Event("broken", info={"reason": self._message(reason)}))
        if self.on_broken is not None and not self.closing:
            with contextlib.suppress(Exception):
                self.on_broken(reason)

    def close(self) -> None:
        """Stop reading (the container is being killed)."""
        self.closing = True
        for f in (self.proc.stdin,):
            if f is not None and not f.closed:
                with contextlib.suppress(OSError):
                    f.close()
