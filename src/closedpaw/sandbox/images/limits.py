"""Bounds on one image import, so a crafted image of a few kilobytes cannot fill the disk,
exhaust memory or run for ever.

:class:`ImportLimits` is a frozen value handed to :func:`closedpaw.sandbox.images.oci.
import_image`; the defaults below fit every ordinary image (a full Debian or Ubuntu image with
a language runtime is 0.1-2 GiB, 10-100 k files, 5-30 layers, at most ~30 directories deep)
with a wide margin, while keeping a hostile one to a known worst case. Every limit, when hit,
ends the import with a one-line :class:`~closedpaw.errors.ImageRejected` naming the limit, and
nothing is installed. Settings wire environment/config names to these fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from closedpaw.errors import ImageRejected

__all__ = ["DEFAULT_LIMITS", "Deadline", "ImportLimits"]

_GIB = 1 << 30
_MIB = 1 << 20


@dataclass(frozen=True)
class ImportLimits:
    """Limits of one import. All sizes are bytes."""

    #: Bytes written while unpacking, all layers together: every regular file's size rounded
    #: up to whole 4 KiB blocks (what the disk allocates; sparse input is never kept sparse),
    #: plus 512 bytes per entry of any kind; hard links cost only their entry.
    max_unpacked_bytes: int = 16 * _GIB
    #: One regular file in a layer.
    max_file_bytes: int = 4 * _GIB
    #: One compressed or uncompressed blob as stored in the layout (its declared size must not
    #: exceed it either).
    max_blob_bytes: int = 8 * _GIB
    #: One extended header: a PAX record block or a GNU long name/link (read into memory).
    max_header_bytes: int = 1 * _MIB
    #: Members of all layers together (files, dirs, links, whiteouts, headers count once).
    max_members: int = 2_000_000
    #: Members of the outer archive when the image is a tar file (an OCI layout or docker save).
    max_archive_members: int = 100_000
    #: Layers in the image.
    max_layers: int = 256
    #: Path components of one entry (a/b/c is 3).
    max_depth: int = 128
    #: One JSON document (index, manifest, config): read whole, so small.
    max_json_bytes: int = 4 * _MIB
    #: Wall-clock seconds for the whole import (fetch, unpack, digest, install).
    deadline_s: float = 3600.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"ImportLimits.{f.name} must be a positive number, not {v!r}")

    def deadline(self) -> Deadline:
        return Deadline(self.deadline_s)


DEFAULT_LIMITS = ImportLimits()


class Deadline:
    """A point in monotonic time; :meth:`check` raises once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise ImageRejected(f"the import took longer than its deadline of "
                                f"{self.seconds:g} s (ImportLimits.deadline_s)")
