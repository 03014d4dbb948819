"""Drivers: the lifecycle of containers behind one protocol (runsc, runc, fake)."""

from closedpaw.sandbox.drivers.base import Driver, DriverFeatures, Process
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.drivers.runc import RuncDriver
from closedpaw.sandbox.drivers.runsc import RunscDriver

__all__ = ["Driver", "DriverFeatures", "FakeDriver", "Process", "RuncDriver", "RunscDriver"]
