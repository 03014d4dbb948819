"""The Driver protocol: the lifecycle of containers, apart from the work run in them.

A driver turns a bundle directory into a running container and back into nothing. It never
decides policy; the bundle it receives was already built and validated.

The one-shot path imports these protocols only for type checking (this module imports
``typing``); :class:`DriverFeatures` lives in :mod:`.features` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from closedpaw.sandbox.drivers.features import DriverFeatures

__all__ = ["Driver", "DriverFeatures", "Process"]


@runtime_checkable
class Process(Protocol):
    """A running runtime invocation (``runc run``, ``runc exec``...) with piped output."""

    pid: int
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None
    stdin: IO[bytes] | None
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


class Driver(Protocol):
    """Lifecycle of OCI containers. Implementations: runsc, runc, fake."""

    name: str

    def features(self) -> DriverFeatures: ...

    def run(self, cid: str, bundle: Path, *, stdin: bool, log: Path | None = None) -> Process:
        """Create, start and wait in one foreground process (one-shot sandboxes).

        The runtime's own messages go to ``log``, never into the program's stderr.
        """
        ...

    def create(self, cid: str, bundle: Path) -> None:
        """Create and start a long-lived container whose init idles until killed."""
        ...

    def exec(self, cid: str, process_json: Path, *, stdin: bool, log: Path | None = None,
             pid_file: Path | None = None) -> Process:
        """Run another process in a live container, as described by an OCI process.json."""
        ...

    def kill_exec(self, cid: str, pid_file: Path) -> bool:
        """SIGKILL the process started by :meth:`exec` with this ``pid_file``."""
        ...

    def kill(self, cid: str, signal: str = "KILL", *, all_processes: bool = False) -> bool:
        """Signal a container's processes; ``False`` when it no longer exists."""
        ...

    def pause(self, cid: str) -> None:
        """Freeze every process of a container."""
        ...

    def resume(self, cid: str) -> None:
        """Thaw a paused container."""
        ...

    def delete(self, cid: str) -> None:
        """Force-delete a container and its runtime state. Idempotent."""
        ...

    def state(self, cid: str) -> str | None:
        """The runtime's status string ("created", "running", "stopped", ...) or ``None``."""
        ...

    def list_ids(self) -> Sequence[str]:
        """Ids of every container this driver's runtime root knows."""
        ...
