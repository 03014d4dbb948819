"""What an approved action does, one module per action type, found through a registry.

Code runs only in a sandbox; host file and network access run only after the gate let them
through. Each module exports ``ACTION_TYPES`` (action_type -> executor) and may export
``RAISERS`` (action_type -> the level it needs at least), ``REQUESTER_RAISERS`` (the same,
knowing who asks) and ``REACH`` (action_type -> the secrets its result may carry, for the
redactor); :func:`default_registry` collects them. Executors get an
:class:`ExecutionContext`, never the engine.
"""

from __future__ import annotations

from closedpaw.gate.executors import (
    channel,
    chat,
    code,
    files,
    network,
    secret,
    sessions,
    skill,
)
from closedpaw.gate.executors.context import ExecutionContext
from closedpaw.gate.executors.registry import Executor, ExecutorRegistry

__all__ = ["ExecutionContext", "Executor", "ExecutorRegistry", "default_registry"]


def default_registry() -> ExecutorRegistry:
    """Every built-in executor, keyed by action type."""
    reg = ExecutorRegistry()
    for module in (code, files, network, chat, secret, skill, sessions, channel):
        raisers = getattr(module, "RAISERS", {})
        by_requester = getattr(module, "REQUESTER_RAISERS", {})
        reach = getattr(module, "REACH", {})
        for action_type, fn in module.ACTION_TYPES.items():
            reg.register(action_type, fn, raiser=raisers.get(action_type),
                         requester_raiser=by_requester.get(action_type),
                         reach=reach.get(action_type))
    return reg
