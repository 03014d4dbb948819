"""The gate: typed actions, risk rules, bound approvals, persistence and the engine loop."""

from closedpaw.gate.actions import (
    Action,
    ActionRequest,
    ActionStatus,
    ParsedAction,
    RiskLevel,
    parse_action,
)
from closedpaw.gate.engine import Gate
from closedpaw.gate.rules import Decision, RuleSet
from closedpaw.gate.store import ActionRecord, Store

__all__ = ["Action", "ActionRecord", "ActionRequest", "ActionStatus", "Decision",
           "Gate", "ParsedAction", "RiskLevel", "RuleSet", "Store", "parse_action"]
