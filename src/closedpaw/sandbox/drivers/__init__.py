"""Drivers: the lifecycle of containers behind one protocol (runsc, runc, fake).

Each driver, and the ``Driver``/``Process`` protocols (typing), load on first access: a
one-shot run imports only the driver it uses (through :mod:`.detect`).
"""

from __future__ import annotations

from closedpaw.sandbox.drivers.features import DriverFeatures

TYPE_CHECKING = False
if TYPE_CHECKING:
    from closedpaw.sandbox.drivers.base import Driver, Process
    from closedpaw.sandbox.drivers.fake import FakeDriver
    from closedpaw.sandbox.drivers.runc import RuncDriver
    from closedpaw.sandbox.drivers.runsc import RunscDriver

__all__ = ["Driver", "DriverFeatures", "FakeDriver", "Process", "RuncDriver", "RunscDriver"]

_LAZY = {"Driver": "base", "Process": "base", "FakeDriver": "fake", "RuncDriver": "runc",
         "RunscDriver": "runsc"}


def __getattr__(name: str) -> object:
    import importlib  # here: the package imports cheaply

    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{where}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
