"""The states of a long-lived sandbox (its own module: a one-shot run creates no enum)."""

from __future__ import annotations

import enum

__all__ = ["SandboxStatus"]


class SandboxStatus(enum.StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
