"""``/api/actions``: submit, list, show, approve, reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from closedpaw.api.deps import Auth, GateDep
from closedpaw.api.schemas import ActionList, ApproveBody, RejectBody, SubmitResponse
from closedpaw.gate import ActionRecord, ActionRequest, ActionStatus

router = APIRouter(prefix="/api/actions", tags=["actions"])


@router.post("", response_model=SubmitResponse, status_code=201)
def submit(body: ActionRequest, gate: GateDep, p: Auth) -> SubmitResponse:
    """Submit an action. Low and medium run at once; high and critical wait."""
    return SubmitResponse.of(gate.submit(p, body))


@router.get("", response_model=ActionList)
def list_actions(gate: GateDep, p: Auth,
                 status: Annotated[ActionStatus | None, Query()] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> ActionList:
    return ActionList(actions=gate.list_actions(status=[status] if status else None,
                                                limit=limit, offset=offset))


@router.get("/pending", response_model=ActionList)
def pending(gate: GateDep, p: Auth) -> ActionList:
    """Actions waiting for a decision, with their canonical parameters and hash."""
    return ActionList(actions=gate.pending())


@router.get("/{action_id}", response_model=ActionRecord)
def get_action(action_id: str, gate: GateDep, p: Auth) -> ActionRecord:
    return gate.get(action_id)


@router.post("/{action_id}/approve", response_model=ActionRecord)
def approve(action_id: str, body: ApproveBody, gate: GateDep, p: Auth) -> ActionRecord:
    """Approve by the sha256 of the canonical parameters you reviewed. The approver is the
    authenticated principal."""
    return gate.approve(p, action_id, body.params_sha256)


@router.post("/{action_id}/reject", response_model=ActionRecord)
def reject(action_id: str, gate: GateDep, p: Auth,
           body: RejectBody | None = None) -> ActionRecord:
    return gate.reject(p, action_id, body.reason if body else "")
