"""Settings: the only module that reads environment variables.

Precedence, highest first: an explicit argument to a call > a :class:`Settings` object passed in
> ``CLOSEDPAW_*`` environment variables > the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from closedpaw.errors import ConfigError

__all__ = ["RUNTIME_CHOICES", "Settings"]

RUNTIME_CHOICES = ("auto", "runsc", "runc")


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration of the sandbox engine.

    ``state_dir`` holds per-sandbox bundles and runtime state (a tmpfs such as /run is best);
    ``data_dir`` holds durable data such as the prepared host root filesystem and probe cache;
    ``image_dir`` the image store (default ``data_dir/images``); ``policy_file`` the user's
    execution policies, read over the built-in ones when it exists.
    """

    state_dir: Path = Path("/run/closedpaw")
    data_dir: Path = Path("/var/lib/closedpaw")
    runtime: str = "auto"
    max_sandboxes: int = 32
    output_cap_bytes: int = 1024 * 1024
    cgroup_parent: str = "closedpaw"
    image_dir: Path | None = None
    policy_file: Path = Path("/etc/closedpaw/policies.yaml")

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ConfigError(
                f"runtime: {self.runtime!r} is not one of {', '.join(RUNTIME_CHOICES)}"
            )
        if self.max_sandboxes < 1:
            raise ConfigError("max_sandboxes: must be at least 1")
        if self.output_cap_bytes < 1:
            raise ConfigError("output_cap_bytes: must be at least 1")
        if not self.cgroup_parent.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("cgroup_parent: only letters, digits, '-' and '_' are allowed")

    @property
    def images(self) -> Path:
        """The image store directory."""
        return self.image_dir if self.image_dir is not None else self.data_dir / "images"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CLOSEDPAW_*`` variables over the defaults."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if v := env.get("CLOSEDPAW_STATE_DIR"):
            kwargs["state_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_DATA_DIR"):
            kwargs["data_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_IMAGE_DIR"):
            kwargs["image_dir"] = Path(v)
        if v := env.get("CLOSEDPAW_POLICY_FILE"):
            kwargs["policy_file"] = Path(v)
        if v := env.get("CLOSEDPAW_CGROUP_PARENT"):
            kwargs["cgroup_parent"] = v
        if v := env.get("CLOSEDPAW_RUNTIME"):
            kwargs["runtime"] = v
        for key, name in (("max_sandboxes", "CLOSEDPAW_MAX_SANDBOXES"),
                          ("output_cap_bytes", "CLOSEDPAW_OUTPUT_CAP_BYTES")):
            if v := env.get(name):
                try:
                    kwargs[key] = int(v)
                except ValueError:
                    raise ConfigError(f"{name}: {v!r} is not an integer") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        for k in changes:
            if k not in known:
                raise ConfigError(f"{k}: unknown setting")
        return replace(self, **changes)  # type: ignore[arg-type]
