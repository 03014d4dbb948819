"""Root filesystems for sandboxes: ``host`` (a skeleton binding the host's /usr), the image
store (:mod:`.store`), images built with debootstrap (:mod:`.debootstrap`), OCI imports
(:mod:`.oci`) and the per-sandbox disposable overlay (:mod:`.overlay`).

Only the light modules are imported here; building and importing load on demand.
"""

from closedpaw.sandbox.images.host import HostRootfs, prepare_host_rootfs
from closedpaw.sandbox.images.store import HOST_IMAGE, Image, ImageStore

__all__ = ["HOST_IMAGE", "HostRootfs", "Image", "ImageStore", "prepare_host_rootfs"]
