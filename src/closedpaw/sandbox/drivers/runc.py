"""runc: containers on the host kernel, confined by namespaces, cgroups, seccomp and no caps."""

from __future__ import annotations

from closedpaw.sandbox.drivers.features import DriverFeatures
from closedpaw.sandbox.drivers.oci_cli import OCICLIDriver

__all__ = ["RuncDriver"]


class RuncDriver(OCICLIDriver):
    name = "runc"
    install_hint = "install it with 'apt-get install runc'"

    def features(self) -> DriverFeatures:
        if self._features is None:
            self._features = DriverFeatures(
                name="runc", version=self.version(), platform="native", seccomp=True,
                pids_mode="cgroup",
            )
        return self._features
