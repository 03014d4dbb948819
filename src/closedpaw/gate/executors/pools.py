"""Warm pools for ``code_execution``: one per execution policy, made on first use from the
context's sandbox factory. A pooled sandbox runs one action and is deleted (the pool refills
in the background); nothing of one action can reach the next. The gate closes them at
shutdown (:meth:`WarmPools.close`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from closedpaw.sandbox import SandboxManager, SandboxPool

__all__ = ["WarmPools"]


class WarmPools:
    def __init__(self) -> None:
        self._pools: dict[str, SandboxPool] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, mgr: SandboxManager, policy: str) -> SandboxPool | None:
        """The policy's pool (made now on first use); None once closed (the caller then runs
        a cold sandbox, as without a pool)."""
        with self._lock:
            if self._closed:
                return None
            p = self._pools.get(policy)
            if p is None:
                # python code actions run in the pooled sandbox's warm kernel
                p = self._pools[policy] = mgr.pool(policy, kernels=("python",))
            return p

    def policies(self) -> list[str]:
        with self._lock:
            return list(self._pools)

    def close(self) -> None:
        """Close every pool (deletes their ready sandboxes). Idempotent."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()
