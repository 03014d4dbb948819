"""``skill_execution``: needs a skill registry in the execution context. Until one is configured
(``ctx.skills is None``) the action fails with a clear message: it never runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.errors import NotConfigured
from closedpaw.gate.actions import SkillExecutionParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "execute_skill"]


def execute_skill(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, SkillExecutionParams)
    if ctx.skills is None:
        raise NotConfigured("cannot execute skill_execution: no skill registry is configured")
    raise NotConfigured(f"cannot execute skill_execution: {type(ctx.skills).__name__} "
                             "does not support it yet")


ACTION_TYPES = {"skill_execution": execute_skill}
