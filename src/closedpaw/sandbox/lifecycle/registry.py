"""The registry of one manager: the live sandboxes, the ``max_sandboxes`` cap, the open pools
and the snapshots, plus what every child needs to start and tear down sandboxes (settings,
the driver resolver, the reaper).

The manager builds it and hands it to every :class:`~closedpaw.sandbox.lifecycle.sandbox.
Sandbox`, :class:`~closedpaw.sandbox.lifecycle.pool.SandboxPool` and :class:`~closedpaw.
sandbox.lifecycle.snapshot.Snapshot`; they register and unregister themselves here and never
reach into the manager. This module imports none of them (they import it), so the lifecycle
package has no import cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from closedpaw.errors import SandboxLimitReached
from closedpaw.sandbox.host.reaper import Reaper
from closedpaw.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, Protocol, TypeVar

    from closedpaw.sandbox.drivers.base import Driver
    from closedpaw.sandbox.lifecycle.status import SandboxStatus

    class _Live(Protocol):
        @property
        def id(self) -> str: ...

        def delete(self) -> None: ...

    class _Closable(Protocol):
        def close(self) -> None: ...

    class _Removable(Protocol):
        def remove(self) -> None: ...

    S = TypeVar("S", bound=_Live)
else:
    # typing is not imported at run time (the one-shot path pays for every import): the
    # registry's type parameter exists for type checkers only
    class Generic:
        def __class_getitem__(cls, item: object) -> type:
            return cls

    S = None

__all__ = ["Registry", "SandboxStatus"]


def __getattr__(name: str) -> object:
    if name == "SandboxStatus":  # its home is .status; loaded when asked for
        from closedpaw.sandbox.lifecycle.status import SandboxStatus

        return SandboxStatus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Registry(Generic[S]):
    """Live set, cap, pools and snapshots of one manager; thread-safe."""

    def __init__(self, settings: Settings, reaper: Reaper,
                 resolve: Callable[[str | None], Driver]) -> None:
        self.settings = settings
        self.reaper = reaper
        self._resolve = resolve
        self._live: dict[str, S] = {}
        self._inflight = 0
        self._pools: set[_Closable] = set()
        self._snapshots: set[_Removable] = set()
        self._lock = threading.Lock()

    def driver(self, runtime: str | None = None) -> Driver:
        """The driver for ``runtime`` (the manager's resolution rules)."""
        return self._resolve(runtime)

    # -- the cap -------------------------------------------------------------------------------
    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one place under ``max_sandboxes`` while a sandbox is being started (or a
        one-shot runs); :class:`SandboxLimitReached` when none is free."""
        with self._lock:
            if len(self._live) + self._inflight >= self.settings.sandbox.max_sandboxes:
                raise SandboxLimitReached(
                    f"{self.settings.sandbox.max_sandboxes} sandboxes are already live "
                    "(max_sandboxes); delete some or raise CLOSEDPAW_MAX_SANDBOXES")
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    # -- live sandboxes ------------------------------------------------------------------------
    def admit(self, sb: S) -> None:
        """Track ``sb`` (still being created) under the cap, atomically: it counts once, from
        now until it is forgotten; :class:`SandboxLimitReached` when no place is free."""
        with self._lock:
            if len(self._live) + self._inflight >= self.settings.sandbox.max_sandboxes:
                raise SandboxLimitReached(
                    f"{self.settings.sandbox.max_sandboxes} sandboxes are already live "
                    "(max_sandboxes); delete some or raise CLOSEDPAW_MAX_SANDBOXES")
            self._live[sb.id] = sb

    def add(self, sb: S) -> None:
        """Track ``sb`` outside the cap check (a sandbox whose teardown failed comes back
        here with status error, so it stays visible and ``cleanup()`` retries it)."""
        with self._lock:
            self._live[sb.id] = sb

    def forget(self, sid: str) -> None:
        with self._lock:
            self._live.pop(sid, None)

    def get(self, sid: str) -> S | None:
        with self._lock:
            return self._live.get(sid)

    def sandboxes(self) -> list[S]:
        with self._lock:
            return list(self._live.values())

    # -- pools and snapshots -------------------------------------------------------------------
    def add_pool(self, pool: _Closable) -> None:
        with self._lock:
            self._pools.add(pool)

    def forget_pool(self, pool: _Closable) -> None:
        with self._lock:
            self._pools.discard(pool)

    def add_snapshot(self, snap: _Removable) -> None:
        with self._lock:
            self._snapshots.add(snap)

    def forget_snapshot(self, snap: _Removable) -> None:
        with self._lock:
            self._snapshots.discard(snap)

    def cleanup(self) -> int:
        """Close the open pools (their refills would race the rest), delete every live
        sandbox, remove the snapshots and wait for teardown. Returns how many sandboxes were
        deleted."""
        with self._lock:
            pools = list(self._pools)
        for p in pools:
            p.close()
        boxes = self.sandboxes()
        for b in boxes:
            b.delete()
        with self._lock:
            snaps = list(self._snapshots)
        for s in snaps:
            s.remove()
        self.reaper.drain()
        return len(boxes)
