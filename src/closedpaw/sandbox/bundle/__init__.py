"""OCI bundle generation: pure functions from a spec to a validated ``config.json``."""

from closedpaw.sandbox.bundle.oci import BundleInputs, build_config, merge_env
from closedpaw.sandbox.bundle.resources import HostLimits
from closedpaw.sandbox.bundle.validate import CHECKS, check_config, failures

__all__ = ["CHECKS", "BundleInputs", "HostLimits", "build_config", "check_config", "failures",
           "merge_env"]
