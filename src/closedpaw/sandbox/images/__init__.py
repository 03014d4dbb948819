"""Root filesystems for sandboxes: ``host`` (a skeleton binding the host's /usr), the image
store (:mod:`.store`), images built with debootstrap (:mod:`.debootstrap`), OCI imports
(:mod:`.oci`) and the per-sandbox disposable overlay (:mod:`.overlay`).

Only the host skeleton is imported here; the store (tempfile, hashlib, secrets), building and
importing load on first use, so a one-shot on the host image never loads them.
"""

from __future__ import annotations

from closedpaw.sandbox.images.host import HOST_IMAGE, HostRootfs, prepare_host_rootfs

TYPE_CHECKING = False  # typing is not imported at run time (closedpaw run)
if TYPE_CHECKING:
    from closedpaw.sandbox.images.store import Image, ImageStore

__all__ = ["HOST_IMAGE", "HostRootfs", "Image", "ImageStore", "prepare_host_rootfs"]

_LAZY = {"Image": "closedpaw.sandbox.images.store", "ImageStore": "closedpaw.sandbox.images.store"}


def __getattr__(name: str) -> object:
    import importlib  # here: the package imports cheaply

    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where), name)
