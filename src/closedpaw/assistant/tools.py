"""The tools offered to a model, generated from the gate's action types (their parameter
models' JSON Schema), and the strict translation of a model's call into a gate action.

A call whose name is not a tool, or whose arguments do not validate against the action's
model, is refused here: the model is told why, and nothing is submitted or run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from closedpaw.gate.actions import ACTION_TYPES, parse_action
from closedpaw.providers.types import ToolCall, ToolSpec

__all__ = ["TOOLS", "ToolRefused", "to_action", "tool_specs"]


@dataclass(frozen=True)
class _Tool:
    action_type: str
    description: str
    fields: tuple[str, ...] | None = None   # the schema's properties offered (None = all)


TOOLS: dict[str, _Tool] = {
    "run_code": _Tool("code_execution", "Run code in an isolated sandbox without network and "
                      "return its output. For python, the value of a final expression is "
                      "printed.", ("language", "code", "timeout_s")),
    "read_file": _Tool("file_read", "Read a file on the host (needs approval outside the "
                       "workspace)."),
    "write_file": _Tool("file_write", "Write a file on the host (needs approval)."),
    "http_request": _Tool("network_request", "Make an HTTP request (needs approval)."),
    "read_secret": _Tool("secret_read", "Read a named secret (needs approval)."),
    "run_skill": _Tool("skill_execution", "Run an installed skill."),
    "send_message": _Tool("channel_message", "Send a chat message through a configured "
                          "channel to a person's platform id (needs approval unless it is "
                          "to the user of this conversation)."),
}


class ToolRefused(ValueError):
    """The call is not valid; the message goes back to the model."""


def _schema(tool: _Tool) -> dict[str, Any]:
    full = ACTION_TYPES[tool.action_type].model_json_schema()
    props = full.get("properties", {})
    keep = list(props) if tool.fields is None else [f for f in tool.fields if f in props]
    out: dict[str, Any] = {"type": "object",
                           "properties": {k: _clean(copy.deepcopy(props[k])) for k in keep},
                           "additionalProperties": False}
    req = [r for r in full.get("required", []) if r in keep]
    if tool.action_type == "code_execution":
        req = ["language", "code"]
    if req:
        out["required"] = req
    if "$defs" in full:
        out["$defs"] = full["$defs"]
    return out


def _clean(v: Any) -> Any:
    """Drop titles, and the ``null`` branch of optional fields (a model should give a value
    or leave the field out)."""
    if isinstance(v, dict):
        any_of = v.get("anyOf")
        if isinstance(any_of, list) and {"type": "null"} in any_of and len(any_of) == 2:
            other = next(x for x in any_of if x != {"type": "null"})
            v = {**{k: x for k, x in v.items() if k not in ("anyOf", "default")}, **other}
        return {k: _clean(x) for k, x in v.items() if k != "title"}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


_SCHEMAS: dict[str, dict[str, Any]] = {}


def tool_specs(names: list[str] | None = None) -> list[ToolSpec]:
    """The tools, from the gate's action types (all but ``chat``). Their schemas are made
    once (pydantic's schema generation took ~1 ms per tool, on every turn) and each call
    gets its own copy."""
    out = []
    for n, t in TOOLS.items():
        if t.action_type in ACTION_TYPES and (names is None or n in names):
            if n not in _SCHEMAS:
                _SCHEMAS[n] = _schema(t)
            out.append(ToolSpec(n, t.description, copy.deepcopy(_SCHEMAS[n])))
    return out


_LAST_VALUE = '''import ast as _a
_src = {code!r}
_t = _a.parse(_src)
_last = _t.body.pop() if _t.body and isinstance(_t.body[-1], _a.Expr) else None
_g = {{"__name__": "__main__"}}
exec(compile(_t, "<cell>", "exec"), _g)
if _last is not None:
    _v = eval(compile(_a.Expression(_last.value), "<cell>", "eval"), _g)
    if _v is not None:
        print(repr(_v))
'''


def to_action(call: ToolCall, offered: set[str]) -> tuple[str, dict[str, Any]]:
    """(action_type, canonical parameters) for a call, or ToolRefused saying why."""
    tool = TOOLS.get(call.name)
    if tool is None or call.name not in offered:
        raise ToolRefused(f"there is no tool named {call.name!r}; the tools are: "
                          f"{', '.join(sorted(offered))}")
    args = dict(call.arguments)
    if tool.fields is not None:
        extra = set(args) - set(tool.fields)
        if extra:
            raise ToolRefused(f"unexpected argument(s) {sorted(extra)} for {call.name}")
    if tool.action_type == "code_execution" and args.get("language") == "python" \
            and isinstance(args.get("code"), str):
        args["code"] = _LAST_VALUE.format(code=args["code"])
    parsed = parse_action(tool.action_type, args)
    if parsed.problem is not None or parsed.action is None:
        raise ToolRefused(f"invalid arguments for {call.name}: {parsed.problem}")
    return tool.action_type, parsed.parameters
