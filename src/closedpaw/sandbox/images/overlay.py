"""The per-sandbox writable-but-disposable root: an overlay whose lower layer is the image.

The upper and work directories live on a tmpfs of ``size_mb`` mounted for this sandbox only,
so whatever a sandbox writes anywhere in its root is capped, never reaches the image, and is
gone when :func:`unmount_overlay` runs. Both mounts are ``nosuid,nodev``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from closedpaw.errors import ImageError

__all__ = ["mount_overlay", "unmount_overlay"]

_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _mount(source: str, target: Path, fstype: str, data: str) -> None:
    rc = _lib().mount(source.encode(), str(target).encode(), fstype.encode(),
                      _MS_NOSUID | _MS_NODEV, data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise ImageError(f"could not mount the sandbox's {fstype} at {target}: "
                         f"{os.strerror(err)} (needs root and overlayfs)")


def mount_overlay(lower: Path, layer_dir: Path, merged: Path, size_mb: int, *,
                  name_lower: bool = True) -> None:
    """Mount ``lower`` + a fresh upper layer (a ``size_mb`` tmpfs at ``layer_dir``) at
    ``merged``. On failure nothing stays mounted.

    The layers are named to the kernel through ``/proc/self/fd/N`` of descriptors opened for
    the call: overlayfs shows the paths it was given in every ``/proc/self/mountinfo``,
    the sandbox's own included, and these name neither the image store nor the state dir.
    The lower layer keeps its last two components (``/proc/self/fd/N/<image>/<root>``): the
    image store finds the roots in use by them (``store.overlay_lower_dirs``). The host
    image's skeleton, which no store tracks, is named by its fd alone (``name_lower=False``)."""
    layer_dir.mkdir(mode=0o700)
    merged.mkdir(mode=0o755)
    _mount("tmpfs", layer_dir, "tmpfs", f"size={size_mb}m,mode=0700")
    try:
        upper, work = layer_dir / "upper", layer_dir / "work"
        upper.mkdir(mode=0o755)
        work.mkdir(mode=0o700)
        tail = f"/{lower.parent.name}/{lower.name}" if name_lower else ""
        if any(ch in tail for ch in ",:\\"):
            raise ImageError(f"{lower}: overlayfs paths must not contain ',', ':' or '\\'")
        fds: list[int] = []
        try:
            for d in (lower.parent.parent if name_lower else lower, upper, work):
                fds.append(os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            lo, up, wo = (f"/proc/self/fd/{fd}" for fd in fds)
            _mount("overlay", merged, "overlay",
                   f"lowerdir={lo}{tail},upperdir={up},workdir={wo}")
        finally:
            for fd in fds:
                os.close(fd)
    except BaseException:
        _lib().umount2(str(layer_dir).encode(), _MNT_DETACH)
        raise


def unmount_overlay(layer_dir: Path, merged: Path) -> None:
    """Unmount the overlay and its tmpfs (idempotent): the upper layer is gone with it."""
    for p in (merged, layer_dir):
        if os.path.ismount(p):
            _lib().umount2(str(p).encode(), _MNT_DETACH)
