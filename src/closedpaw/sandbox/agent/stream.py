"""Streams of one command's output through the in-sandbox agent, and code-cell results.

:class:`ExecStream` is what ``Sandbox.stream`` returns: iterate it (or ``async for``) to get
``(stream_name, bytes)`` chunks as the command writes them; :attr:`ExecStream.result` is the
:class:`~closedpaw.sandbox.result.ExecutionResult` once iteration ends. ``Sandbox.exec`` is
the same stream consumed to the end (with the optional ``sink`` called per chunk).
"""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from closedpaw.errors import AgentProtocolError, SpecError
from closedpaw.sandbox.agent.channel import T_KILL, AgentChannel, Event, Request
from closedpaw.sandbox.host.output import OutputSink
from closedpaw.sandbox.result import (
    CodeError,
    CodeResult,
    ExecutionResult,
    Isolation,
    ResourceUsage,
)

__all__ = ["ExecStream"]

# How long past a command's own deadline the host waits for the agent's answer before it
# declares the agent unresponsive and ends the sandbox.
BACKSTOP_S = 10.0
# A command whose deadline passes while its sandbox is paused gets a timed-out result this
# long after the deadline (the command alone fails; the sandbox stays paused).
PAUSED_GRACE_S = 1.0
_POLL_S = 0.25
PAUSED_NOTE = b"closedpaw: the sandbox was paused past this command's deadline\n"
_MAX_NUM = 1 << 62
# Cell values and error texts: the kernels cut at 64 Ki characters and add their marker;
# the host's own bound leaves room for it.
CELL_TEXT_CAP = 64 * 1024 + 256


def _num(info: dict[str, Any], key: str) -> float:
    v = info.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < _MAX_NUM:
        raise AgentProtocolError(f"agent sent an invalid {key!r}: {str(v)[:40]!r}")
    return float(v)


_SURROGATE = re.compile("[\ud800-\udfff]")


def fit_text(v: str, cap: int, *, tail: bool = False) -> str:
    """Text from a sandbox made fit for the host: lone UTF-16 surrogates (a node string cut
    inside a pair, or made by the cell) become U+FFFD, so it always encodes as UTF-8; longer
    than ``cap`` characters, it is cut with a marker (``tail`` keeps the end)."""
    v = _SURROGATE.sub("\ufffd", v)
    if len(v) <= cap:
        return v
    mark = f" [closedpaw: {len(v) - cap} characters cut] "
    return mark + v[-cap:] if tail else v[:cap] + mark


def _text(info: Any, key: str, cap: int, *, tail: bool = False) -> str:
    v = info.get(key) if isinstance(info, dict) else None
    if v is None:
        return ""
    if not isinstance(v, str):
        raise AgentProtocolError(f"agent sent a non-text {key!r}")
    return fit_text(v, cap, tail=tail)


class ExecStream:
    """Output chunks of one request, as they arrive. Not thread-safe; consume it once."""

    def __init__(self, channel: AgentChannel, req: Request, *, sid: str, argv: list[str],
                 isolation: Isolation, timeout_s: float, cap: int,
                 finish: Callable[[ExecStream], ResourceUsage],
                 oom: Callable[[], bool], paused: Callable[[], bool] = lambda: False,
                 gone: Callable[[], Exception | None] = lambda: None,
                 started: float | None = None, is_cell: bool = False) -> None:
        self._ch = channel
        self._req = req
        self.sid = sid
        self.argv = argv
        self._iso = isolation
        self._timeout_s = timeout_s
        self._cap = cap
        self._finish = finish
        self._oom = oom
        self._paused = paused
        self._gone = gone
        self._is_cell = is_cell
        self._t0 = time.monotonic() if started is None else started
        self._out = bytearray()
        self._err = bytearray()
        self.result: ExecutionResult | None = None
        self._final: Event | None = None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return self

    def __next__(self) -> tuple[str, bytes]:
        if self._final is not None:
            raise StopIteration
        deadline = self._t0 + self._timeout_s
        while True:
            try:
                ev = self._req.events.get(timeout=_POLL_S)
            except queue.Empty:
                now = time.monotonic()
                if now >= deadline + PAUSED_GRACE_S and self._paused():
                    # paused past its deadline: this command alone ends (timed out); the
                    # agent kills it when the sandbox resumes
                    self._ch.abandon(self._req)
                    self._err.extend(PAUSED_NOTE)
                    self._final = (Event("result", info={
                        "timed_out": True, "restarted": True, "error": {
                            "name": "Timeout", "message": PAUSED_NOTE.decode().strip()}})
                        if self._is_cell else
                        Event("exit", info={"code": 137, "timed_out": True}))
                    self.result = self._build(self._final, oom=False)
                    raise StopIteration from None
                if now < deadline + BACKSTOP_S:
                    continue
                self._ch.fail(f"no answer {BACKSTOP_S:.0f} s past the command's deadline")
                ev = self._req.events.get(timeout=5)
            if ev.kind == "broken":
                self._ch.finish(self._req)
                reason = str((ev.info or {}).get("reason", "broken"))
                self._final = ev
                if self._ch.closed_by_host and (gone := self._gone()) is not None:
                    raise gone  # deleted (or stopped) while it ran
                if self._oom():
                    # the kernel's OOM killer took the sandbox (under runsc it may pick the
                    # Sentry): report the OOM kill, as the exec path always did
                    self.result = self._build(Event("exit", info={"code": 137}), oom=True)
                    raise StopIteration
                raise AgentProtocolError(reason)
            if ev.kind in ("stdout", "stderr"):
                (self._out if ev.kind == "stdout" else self._err).extend(ev.data)
                return ev.kind, ev.data
            self._final = ev
            self._ch.finish(self._req)
            self.result = self._build(ev)
            raise StopIteration

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        """Async form: each chunk is awaited in a worker thread, never blocking the loop."""
        done = object()

        def step() -> object:
            try:
                return next(self)
            except StopIteration:
                return done
        while True:
            item = await asyncio.to_thread(step)
            if item is done:
                return
            assert isinstance(item, tuple)
            yield item

    def drain(self, sink: OutputSink | None = None) -> ExecutionResult:
        """Consume the rest, calling ``sink(stream, chunk)``; return the result."""
        for name, data in self:
            if sink is not None:
                sink(name, data)
        assert self.result is not None
        return self.result

    def kill(self) -> None:
        """SIGKILL the command's process group; iteration then ends with its result."""
        if self._final is None:
            self._ch.send(T_KILL, self._req.rid)

    def close(self) -> None:
        """Kill the command if still running and consume what is left."""
        if self._final is None:
            self.kill()
            for _ in self:
                pass

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self, ev: Event, oom: bool | None = None) -> ExecutionResult:
        info = ev.info or {}
        duration_ms = (time.monotonic() - self._t0) * 1000
        usage = self._finish(self)
        oom = self._oom() if oom is None else oom
        out_total = int(_num(info, "out_total"))
        err_total = int(_num(info, "err_total"))
        timed_out = info.get("timed_out") is True
        stderr = bytes(self._err)
        if ev.kind == "result":
            return self._cell(info, out_total, err_total, timed_out, duration_ms, usage, oom)
        spawn = info.get("spawn_error")
        code = int(_num(info, "code")) if "code" in info else 1
        if spawn is not None:
            if spawn == "workdir":
                raise SpecError("workdir", "cannot be entered in the sandbox: it is missing, "
                                "not a directory, or closed to the sandbox user (create it "
                                "first, e.g. with mkdir -p in an earlier command)")
            why = {"not-found": "command not found", "permission": "permission denied"}.get(
                str(spawn), _text(info, "message", 200) or "cannot execute")
            cmd = self.argv[0] if self.argv else "command"
            stderr = f"closedpaw: {cmd}: {why}\n".encode()
            err_total = len(stderr)
        if timed_out or oom:
            code = 128 + signal.SIGKILL
        return ExecutionResult(
            sandbox_id=self.sid, exit_code=code, stdout=bytes(self._out), stderr=stderr,
            duration_ms=duration_ms, isolation=self._iso, timed_out=timed_out,
            oom_killed=oom and not timed_out,
            stdout_truncated=max(out_total, len(self._out)) > len(self._out),
            stderr_truncated=max(err_total, len(stderr)) > len(stderr),
            stdout_total_bytes=max(out_total, len(self._out)),
            stderr_total_bytes=max(err_total, len(stderr)), usage=usage)

    def _cell(self, info: dict[str, Any], out_total: int, err_total: int, timed_out: bool,
              duration_ms: float, usage: ResourceUsage, oom: bool) -> CodeResult:
        cap = CELL_TEXT_CAP
        value = info.get("value")
        if value is not None and not isinstance(value, str):
            raise AgentProtocolError("agent sent a non-text cell value")
        err = info.get("error")
        error = None
        if err is not None:
            if not isinstance(err, dict):
                raise AgentProtocolError("agent sent a malformed cell error")
            error = CodeError(_text(err, "name", 200) or "Error", _text(err, "message", cap),
                              _text(err, "traceback", cap, tail=True))
        restarted = info.get("restarted") is True
        code = 128 + signal.SIGKILL if (timed_out or oom) else (1 if error else 0)
        return CodeResult(
            sandbox_id=self.sid, exit_code=code, stdout=bytes(self._out),
            stderr=bytes(self._err), duration_ms=duration_ms, isolation=self._iso,
            timed_out=timed_out, oom_killed=oom and not timed_out,
            stdout_truncated=out_total > len(self._out),
            stderr_truncated=err_total > len(self._err),
            stdout_total_bytes=max(out_total, len(self._out)),
            stderr_total_bytes=max(err_total, len(self._err)), usage=usage,
            value=fit_text(value, cap) if value is not None else None, error=error,
            restarted=restarted)
