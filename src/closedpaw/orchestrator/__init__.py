"""The gate: typed actions, risk rules, bound approvals, persistence and the engine loop."""

from closedpaw.orchestrator.actions import (
    Action,
    ActionRequest,
    ActionStatus,
    ParsedAction,
    RiskLevel,
    parse_action,
)
from closedpaw.orchestrator.engine import Orchestrator
from closedpaw.orchestrator.rules import Decision, RuleSet
from closedpaw.orchestrator.store import ActionRecord, Store

__all__ = ["Action", "ActionRecord", "ActionRequest", "ActionStatus", "Decision",
           "Orchestrator", "ParsedAction", "RiskLevel", "RuleSet", "Store", "parse_action"]
