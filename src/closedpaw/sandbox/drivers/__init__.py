"""Drivers: the lifecycle of containers behind one protocol (runsc, runc, fake).

``Driver`` and ``Process`` (typing protocols) load on first access: the one-shot path never
needs them at run time.
"""

from __future__ import annotations

from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.drivers.features import DriverFeatures
from closedpaw.sandbox.drivers.runc import RuncDriver
from closedpaw.sandbox.drivers.runsc import RunscDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from closedpaw.sandbox.drivers.base import Driver, Process

__all__ = ["Driver", "DriverFeatures", "FakeDriver", "Process", "RuncDriver", "RunscDriver"]


def __getattr__(name: str) -> object:
    if name in ("Driver", "Process"):
        from closedpaw.sandbox.drivers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
