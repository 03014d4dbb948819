"""Root filesystems for sandboxes. Today: ``host``, a skeleton that binds the host's /usr."""

from closedpaw.sandbox.images.host import HostRootfs, prepare_host_rootfs

__all__ = ["HostRootfs", "prepare_host_rootfs"]
