"""Executors by action type. An action type nobody registered is a miss: the action fails
with :class:`~closedpaw.errors.NoExecutor`, it never runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from closedpaw.errors import NoExecutor

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["Executor", "ExecutorRegistry"]

#: (context, the stored action, its validated parameters) -> the action's JSON result
Executor = Callable[["ExecutionContext", "ActionRecord", "BaseModel"], dict[str, Any]]


class ExecutorRegistry(Mapping[str, Executor]):
    """action_type -> executor. Built by :func:`closedpaw.gate.executors.default_registry`;
    a new action type is one module plus one :meth:`register` call."""

    def __init__(self) -> None:
        self._by_type: dict[str, Executor] = {}

    def register(self, action_type: str, fn: Executor) -> None:
        if action_type in self._by_type:
            raise ValueError(f"an executor for {action_type!r} is registered already")
        self._by_type[action_type] = fn

    def executor(self, action_type: str) -> Executor:
        fn = self._by_type.get(action_type)
        if fn is None:
            raise NoExecutor(f"cannot execute {action_type!r}: no executor is registered for "
                             "this action type")
        return fn

    def __getitem__(self, action_type: str) -> Executor:
        return self._by_type[action_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_type)

    def __len__(self) -> int:
        return len(self._by_type)
