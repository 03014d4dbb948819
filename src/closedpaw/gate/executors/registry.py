"""Executors by action type. An action type nobody registered is a miss: the action fails
with :class:`~closedpaw.errors.NoExecutor`, it never runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from closedpaw.errors import NoExecutor

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.actions import RiskLevel
    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["Executor", "ExecutorRegistry", "Raiser", "Reach", "RequesterRaiser",
           "handed_nothing"]

#: (context, the stored action, its validated parameters) -> the action's JSON result
Executor = Callable[["ExecutionContext", "ActionRecord", "BaseModel"], dict[str, Any]]

#: (context, validated parameters) -> (a level the action needs at least, why) or None; what
#: only the executor's services know at submit (a secret's stored level, a policy's secrets)
Raiser = Callable[["ExecutionContext", "BaseModel"], "tuple[RiskLevel, str] | None"]

#: the same, for a level that depends on who asks (a chat message to someone other than the
#: requester's own chat identity): (context, parameters, requester) -> level or None
RequesterRaiser = Callable[["ExecutionContext", "BaseModel", str],
                           "tuple[RiskLevel, str] | None"]

#: (context, validated parameters) -> the names of the vault's secrets the action's result
#: may carry (the ones it is handed), or None: any (it reads what the host holds). The result
#: is redacted of those alone: redacting every value in text the requester wrote (code
#: printing guesses) would tell them which guess is a secret
Reach = Callable[["ExecutionContext", "BaseModel"], "frozenset[str] | None"]


def handed_nothing(ctx: ExecutionContext, params: BaseModel) -> frozenset[str]:
    """The :data:`Reach` of an action handed no secret of the vault: its result is redacted
    of the ones the process holds for itself only."""
    return frozenset()


class ExecutorRegistry(Mapping[str, Executor]):
    """action_type -> executor. Built by :func:`closedpaw.gate.executors.default_registry`;
    a new action type is one module plus one :meth:`register` call."""

    def __init__(self) -> None:
        self._by_type: dict[str, Executor] = {}
        self._raisers: dict[str, Raiser] = {}
        self._by_requester: dict[str, RequesterRaiser] = {}
        self._reach: dict[str, Reach] = {}

    def register(self, action_type: str, fn: Executor, *, raiser: Raiser | None = None,
                 requester_raiser: RequesterRaiser | None = None,
                 reach: Reach | None = None) -> None:
        if action_type in self._by_type:
            raise ValueError(f"an executor for {action_type!r} is registered already")
        self._by_type[action_type] = fn
        if raiser is not None:
            self._raisers[action_type] = raiser
        if requester_raiser is not None:
            self._by_requester[action_type] = requester_raiser
        if reach is not None:
            self._reach[action_type] = reach

    def reach(self, ctx: ExecutionContext, action_type: str, params: BaseModel | None
              ) -> frozenset[str] | None:
        """The secrets an action's result may carry (:data:`Reach`); None (any) for an
        action type that declares nothing, or parameters that did not validate."""
        fn = self._reach.get(action_type)
        return None if fn is None or params is None else fn(ctx, params)

    def floor(self, ctx: ExecutionContext, action_type: str, params: BaseModel | None,
              requester: str | None = None) -> tuple[RiskLevel, str] | None:
        """The level an action must have at least, from its executor's view (never lower
        than the rules said: the gate takes the higher of the two). A raiser that depends on
        the requester and gets none answers for an unknown one."""
        if params is None:
            return None
        found = []
        fn = self._raisers.get(action_type)
        if fn is not None:
            found.append(fn(ctx, params))
        by = self._by_requester.get(action_type)
        if by is not None:
            found.append(by(ctx, params, requester or ""))
        levels = [f for f in found if f is not None]
        return max(levels, key=lambda f: f[0].rank) if levels else None

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
