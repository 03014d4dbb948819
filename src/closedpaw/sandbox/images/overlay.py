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


def mount_overlay(lower: Path, layer_dir: Path, merged: Path, size_mb: int) -> None:
    """Mount ``lower`` + a fresh upper layer (a ``size_mb`` tmpfs at ``layer_dir``) at
    ``merged``. On failure nothing stays mounted."""
    for p in (lower, layer_dir):
        if any(ch in str(p) for ch in ",:\\"):
            raise ImageError(f"{p}: overlayfs paths must not contain ',', ':' or '\\'")
    layer_dir.mkdir(mode=0o700)
    merged.mkdir(mode=0o755)
    _mount("tmpfs", layer_dir, "tmpfs", f"size={size_mb}m,mode=0700")
    try:
        upper, work = layer_dir / "upper", layer_dir / "work"
        upper.mkdir(mode=0o755)
        work.mkdir(mode=0o700)
        _mount("overlay", merged, "overlay",
               f"lowerdir={lower},upperdir={upper},workdir={work}")
    except BaseException:
        _lib().umount2(str(layer_dir).encode(), _MNT_DETACH)
        raise


def unmount_overlay(layer_dir: Path, merged: Path) -> None:
    """Unmount the overlay and its tmpfs (idempotent): the upper layer is gone with it."""
    for p in (merged, layer_dir):
        if os.path.ismount(p):
            _lib().umount2(str(p).encode(), _MNT_DETACH)
