"""Warm pools: N sandboxes of one spec started ahead of time, handed out once each.

``with manager.pool("python", size=4) as pool:`` starts a background thread that keeps
``size`` sandboxes ready; ``with pool.acquire() as sb:`` takes one (no runtime call on the
way: a ready sandbox is popped under a lock) and wakes the thread to start a replacement.

Rules the pool keeps:

* A sandbox is handed out at most once. It leaves the pool when acquired and never comes
  back: the caller owns it and deletes it (``with``), so no state of one task can reach
  another. There is no ``release``.
* Every pooled sandbox is an ordinary sandbox of :meth:`SandboxManager.create` (or a clone
  restored from a :class:`~closedpaw.sandbox.lifecycle.snapshot.Snapshot`): same bundle checks, same
  state directory and ownership lock (``closedpaw gc`` sees it and leaves it alone while this
  process lives), and it counts against ``max_sandboxes``. A refill that would exceed the cap
  waits for a slot instead; the pool never exceeds the cap.
* A refill that fails is recorded in :attr:`SandboxPool.errors` and retried with exponential
  backoff (capped), never in a tight loop. ``acquire`` on an empty pool creates a sandbox
  itself when the cap allows, otherwise waits for one up to its timeout and then raises
  :class:`~closedpaw.errors.PoolExhausted` naming the cause.
* With ``kernels=("python",)`` each sandbox has its code kernel started before it is
  ready (an empty cell): the first ``sb.code.run(code)`` of its holder skips the
  interpreter's start. The kernel is the sandbox's own, so it is used once, like the sandbox.
* After ``idle_timeout_s`` without an acquire the pool deletes its ready sandboxes (an idle
  runsc sandbox holds memory) and warms up again on the next acquire.
* :meth:`SandboxPool.close` (or leaving ``with``) stops the refill thread and deletes every
  sandbox still in the pool, and the checkpoint image of a pool that took its own snapshot
  (``warmup=``). The manager closes its pools on ``cleanup``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from closedpaw.errors import (
    ConfigError,
    PoolExhausted,
    SandboxLimitReached,
    SandboxStateError,
)
from closedpaw.sandbox.lifecycle.registry import Registry
from closedpaw.sandbox.lifecycle.sandbox import STATEFUL_LANGS, Sandbox
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.spec import SandboxSpec

if TYPE_CHECKING:
    from closedpaw.sandbox.lifecycle.snapshot import Snapshot

__all__ = ["PoolStats", "SandboxPool"]

# Backoff of a failed refill: doubles from the first value up to the cap.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 30.0
# While the cap is reached a refill looks for a free slot this often (not an error).
CAP_POLL_S = 0.05
_MAX_ERRORS = 20
# A kernel warmed in a pooled sandbox: the cell that starts it, and how long it may take.
_EMPTY_CELL = {"python": "None", "node": "undefined"}
KERNEL_START_S = 60.0


@dataclass(frozen=True)
class PoolStats:
    """Counters of a pool's life, for benchmarks and ``repr``."""

    ready: int
    size: int
    created: int          # sandboxes the pool started (refills and cold acquires)
    acquired_warm: int    # acquires served from the ready queue
    acquired_cold: int    # acquires that had to create a sandbox themselves
    expired: int          # ready sandboxes deleted by the idle timeout
    refill_failures: int


class SandboxPool:
    """Created by :meth:`SandboxManager.pool`; a context manager."""

    def __init__(self, registry: Registry[Sandbox], spec: SandboxSpec, *,
                 runtime: str | None = None, size: int | None = None,
                 idle_timeout_s: float | None = None, snapshot: Snapshot | None = None,
                 owns_snapshot: bool = False, name: str = "",
                 kernels: Sequence[str] = (), settle_s: float | None = None) -> None:
        settings = registry.settings
        bad = [k for k in kernels if k not in STATEFUL_LANGS]
        if bad:
            raise ConfigError(f"pool kernels: {', '.join(map(repr, bad))} cannot be warmed; "
                              f"choose from {', '.join(STATEFUL_LANGS)}")
        self.kernels = tuple(dict.fromkeys(kernels))
        self.size = settings.pools.pool_size if size is None else size
        self.idle_timeout_s = (settings.pools.pool_idle_timeout_s if idle_timeout_s is None
                               else idle_timeout_s)
        if self.size < 1:
            raise ConfigError("pool size: must be at least 1")
        if self.size > settings.sandbox.max_sandboxes:
            raise ConfigError(f"pool size: {self.size} is more than max_sandboxes "
                              f"({settings.sandbox.max_sandboxes}); a pool never exceeds the cap")
        if self.idle_timeout_s < 0:
            raise ConfigError("pool idle timeout: must be 0 (never) or more seconds")
        #: after an acquire, the replacement starts this much later (at once when the pool
        #: is empty): the acquirer's work does not share the CPU with a container's start
        self.settle_s = settings.pools.pool_settle_s if settle_s is None else settle_s
        if not 0 <= self.settle_s <= 10:
            raise ConfigError("pool settle: must be 0 to 10 seconds")
        self.registry = registry
        self.spec = spec
        self.runtime = runtime
        self.snapshot = snapshot
        self.owns_snapshot = owns_snapshot
        self.name = name or (snapshot.id if snapshot is not None else "pool")
        # Resolve the driver now: a missing runtime fails here, not in the thread.
        registry.driver(runtime)
        self.errors: collections.deque[str] = collections.deque(maxlen=_MAX_ERRORS)
        self._ready: collections.deque[Sandbox] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._dormant = False            # drained by the idle timeout
        self._last_use = time.monotonic()
        self._wake = False
        self._created = self._warm = self._cold = self._expired = self._failures = 0
        self._thread = threading.Thread(target=self._refill_loop, daemon=True,
                                        name=f"closedpaw-pool-{self.name}")
        self._thread.start()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<SandboxPool {self.name} {s.ready}/{s.size} ready>"

    # -- public -------------------------------------------------------------------------------
    @property
    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(len(self._ready), self.size, self._created, self._warm, self._cold,
                             self._expired, self._failures)

    def wait_ready(self, n: int | None = None, timeout_s: float = 60.0) -> bool:
        """Block until ``n`` (default: ``size``) sandboxes are ready; False on timeout."""
        want = self.size if n is None else min(n, self.size)
        end = time.monotonic() + timeout_s
        with self._cond:
            while len(self._ready) < want and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return len(self._ready) >= want

    def acquire(self, timeout_s: float = 30.0) -> Sandbox:
        """A running sandbox that nobody else ever had. The caller owns it: delete it (or use
        ``with``) when done. Raises :class:`PoolExhausted` if none is ready within
        ``timeout_s`` and none can be created."""
        end = time.monotonic() + timeout_s
        with self._cond:
            self._check_open()
            self._last_use = time.monotonic()
            self._dormant = False
            sb = self._pop_locked()
            self._wake = True
            self._cond.notify_all()
        if sb is not None:
            return sb
        # Empty: start one ourselves when the cap allows, else wait for a refill or a slot.
        why = ""
        while True:
            try:
                sb = self._make()
            except SandboxLimitReached as e:
                why = str(e)
            else:
                with self._cond:
                    self._created += 1
                    self._cold += 1
                    closed = self._closed
                if closed:
                    sb.delete()
                    self._check_open()
                return sb
            with self._cond:
                self._check_open()
                sb = self._pop_locked()
                if sb is not None:
                    return sb
                left = end - time.monotonic()
                if left <= 0:
                    last = f"; last refill error: {self.errors[-1]}" if self.errors else ""
                    raise PoolExhausted(
                        f"no sandbox of pool {self.name} was ready within {timeout_s:g} s "
                        f"and none could be created ({why}){last}")
                self._cond.wait(min(left, CAP_POLL_S))

    def close(self) -> None:
        """Stop refilling and delete every sandbox still in the pool. Idempotent."""
        with self._cond:
            if self._closed and not self._thread.is_alive() and not self._ready:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            left = list(self._ready)
            self._ready.clear()
        self._delete_all(left)
        if self.owns_snapshot and self.snapshot is not None:
            self.snapshot.remove()
        self.registry.forget_pool(self)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise PoolExhausted(f"pool {self.name} is closed")

    def _pop_locked(self) -> Sandbox | None:
        while self._ready:
            sb = self._ready.popleft()
            if sb.status is SandboxStatus.RUNNING:
                self._warm += 1
                return sb
        return None

    def _make(self) -> Sandbox:
        if self.snapshot is not None:
            sb = self.snapshot.restore()
        else:
            sb = Sandbox.launch(self.registry, self.spec, runtime=self.runtime)
        if self.kernels and sb.agent:
            try:
                self._warm_kernels(sb)
            except BaseException:
                self._delete_all([sb])
                raise
        return sb

    def _warm_kernels(self, sb: Sandbox) -> None:
        """Start each of :attr:`kernels` in ``sb`` with a cell that defines nothing, so the
        first real cell finds its interpreter running (no names, no ``_``: the namespace is
        as a fresh interpreter's)."""
        for lang in self.kernels:
            r = sb.code.run(lang, _EMPTY_CELL[lang], timeout_s=KERNEL_START_S)
            if r.exit_code != 0:
                raise SandboxStateError(f"the {lang} kernel of sandbox {sb.id} did not start: "
                                        f"exit {r.exit_code} {r.stderr_text.strip()[:200]}")

    def _delete_all(self, boxes: list[Sandbox]) -> None:
        for sb in boxes:
            try:
                sb.delete()
            except Exception as e:  # keep deleting the others; report it
                self.errors.append(f"delete {sb.id}: {e}")

    def _want_more_locked(self) -> bool:
        return not self._closed and not self._dormant and len(self._ready) < self.size

    def _wait_locked(self, timeout: float | None) -> None:
        if not self._wake:
            self._cond.wait(timeout)
        self._wake = False

    def _refill_loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if self._closed:
                    return
                expired = self._expire_locked()
            if expired:
                self._delete_all(expired)
                continue
            with self._cond:
                if backoff > 0:
                    # Failed recently: sleep out the backoff (close and acquire still wake us).
                    self._wait_locked(backoff)
                    if self._closed:
                        return
                if not self._want_more_locked():
                    self._wait_locked(self._idle_check_interval())
                    continue
                # settle: a refill right after an acquire waits, unless the pool ran dry
                left = self._last_use + self.settle_s - time.monotonic()
                if left > 0 and self._ready:
                    self._cond.wait(left)
                    continue
            try:
                sb = self._make()
            except SandboxLimitReached:
                backoff = CAP_POLL_S
                continue
            except Exception as e:
                backoff = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, backoff * 2))
                with self._cond:
                    self._failures += 1
                    self.errors.append(f"{type(e).__name__}: {e}")
                    self._cond.notify_all()
                continue
            backoff = 0.0
            with self._cond:
                self._created += 1
                keep = not self._closed and not self._dormant
                if keep:
                    self._ready.append(sb)
                    self._cond.notify_all()
            if not keep:
                self._delete_all([sb])

    def _idle_check_interval(self) -> float | None:
        if self.idle_timeout_s <= 0 or self._dormant:
            return None
        return max(0.05, self._last_use + self.idle_timeout_s - time.monotonic())

    def _expire_locked(self) -> list[Sandbox]:
        if (self.idle_timeout_s <= 0 or self._dormant
                or time.monotonic() - self._last_use < self.idle_timeout_s):
            return []
        self._dormant = True
        out = list(self._ready)
        self._ready.clear()
        self._expired += len(out)
        return out

