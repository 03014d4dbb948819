"""Snapshots (runsc): checkpoint a warmed sandbox once, then start clones of it.

``snap = manager.snapshot(spec, warmup=[["python3", "-c", "import json, re"]])`` starts a
sandbox, runs the warm-up commands in it (a command may leave a process running in the
background, e.g. an interpreter with modules imported), and checkpoints it with
``runsc checkpoint``: the image holds the memory of every process and the sandbox's own
tmpfs (/tmp). ``snap.restore()`` then starts a new sandbox with ``runsc restore``, which
resumes that state instead of booting.

A clone is an ordinary sandbox of :meth:`SandboxManager.create`: its own id, state
directory (with its ownership lock), cgroups and a bundle built and checked exactly like a
cold one's, so its isolation is the same; it counts against ``max_sandboxes``. Only the
processes and in-sandbox memory come from the image.

The image may hold secrets of the warmed processes (anything they read or computed), so it
lives under ``settings.snapshots`` (default ``state_dir/snapshots``, a tmpfs) in a directory
of mode 0700 with files of mode 0600, owned by root, locked by its owner like a sandbox's
state directory (``closedpaw gc`` removes the images of a dead owner), and it is deleted by
:meth:`Snapshot.remove` (or leaving ``with``, or the manager's ``cleanup``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from closedpaw.errors import SnapshotError
from closedpaw.sandbox.host import ownership
from closedpaw.sandbox.lifecycle.registry import Registry
from closedpaw.sandbox.lifecycle.sandbox import Sandbox
from closedpaw.sandbox.spec import SandboxSpec

__all__ = ["SNAPSHOT_PREFIX", "Snapshot"]

SNAPSHOT_PREFIX = "snap-"


def _lock_down(path: Path) -> None:
    """Root-only: 0700 directories, 0600 files, nothing followed."""
    for d, _dirs, files in os.walk(path):
        os.chmod(d, 0o700)
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                os.chmod(p, 0o600)


class Snapshot:
    """A checkpoint image of a warmed sandbox and the spec it was taken with. Created by
    :meth:`SandboxManager.snapshot`."""

    def __init__(self, registry: Registry[Sandbox], spec: SandboxSpec, runtime: str, sid: str,
                 path: Path, lock_fd: int) -> None:
        self.registry = registry
        self.spec = spec
        self.runtime = runtime
        self.id = sid
        self.dir = path
        self.image = path / "image"
        self.checkpoint_ms = 0.0
        self._lock_fd: int | None = lock_fd
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<Snapshot {self.id} {'removed' if self.removed else self.image}>"

    @classmethod
    def take(cls, registry: Registry[Sandbox], spec: SandboxSpec, *,
             warmup: Sequence[Sequence[str]] = (), runtime: str = "runsc") -> Snapshot:
        driver = registry.driver(runtime)
        checkpoint = getattr(driver, "checkpoint", None)
        if checkpoint is None or getattr(driver, "restore", None) is None:
            raise SnapshotError(f"the {driver.name} driver cannot checkpoint sandboxes; "
                                "snapshots need runsc")
        sid = SNAPSHOT_PREFIX + os.urandom(6).hex()
        root = registry.settings.snapshots
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        path = root / sid
        fd = ownership.claim(path)
        snap = cls(registry, spec, runtime, sid, path, fd)
        try:
            os.chmod(path, 0o700)
            snap.image.mkdir(mode=0o700)
            with Sandbox.launch(registry, spec, runtime=runtime, agent=False) as sb:
                for argv in warmup:
                    r = sb.exec(argv)
                    if r.exit_code != 0:
                        raise SnapshotError(
                            f"warm-up command {list(argv)!r} exited {r.exit_code}: "
                            f"{r.stderr_text.strip()[:300]}")
                t0 = time.monotonic()
                checkpoint(sb.id, snap.image)
                snap.checkpoint_ms = (time.monotonic() - t0) * 1000
            _lock_down(path)
            if not any(snap.image.iterdir()):
                raise SnapshotError(f"runsc checkpoint of {sid} wrote no image")
        except BaseException:
            snap.remove()
            raise
        registry.add_snapshot(snap)
        return snap

    @property
    def removed(self) -> bool:
        return self._lock_fd is None

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.image.rglob("*") if p.is_file())

    def restore(self) -> Sandbox:
        """A new running sandbox resumed from this snapshot. The caller owns it."""
        if self.removed:
            raise SnapshotError(f"snapshot {self.id} was removed")
        return Sandbox.launch(self.registry, self.spec, runtime=self.runtime,
                              restore_from=self.image)

    def remove(self) -> None:
        """Delete the image (it may hold secrets). Idempotent."""
        with self._mutex:
            fd, self._lock_fd = self._lock_fd, None
            if fd is None:
                return
            ownership.remove(self.dir, fd)
        self.registry.forget_snapshot(self)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()
