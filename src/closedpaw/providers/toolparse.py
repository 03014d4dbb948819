"""Tool calls written as text (llama.cpp, small local models): parsed tolerantly in form,
validated strictly in content.

Accepted forms, and only when the *whole* answer is calls (surrounding whitespace aside):
bare JSON (an object, or a list of objects), ``<tool_call>...</tool_call>`` blocks, or a
```json fenced block. Each call is ``{"name": str, "arguments": object}`` (``parameters`` is
accepted for ``arguments``; arguments given as a JSON string are decoded). The name must be one
of the tools offered. Anything else, and any call mixed into prose, stays text: text that
merely looks like a tool call is text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from closedpaw.providers.types import ToolCall

__all__ = ["parse_text_tool_calls"]

_TAG = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_FENCE = re.compile(r"^```(?:json|tool_call|tool)?\s*\n?(.*?)\n?```$", re.S)
MAX_CALLS = 64


def _one(obj: Any, allowed: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if set(obj) - {"name", "arguments", "parameters", "id", "type"}:
        return None
    name = obj.get("name")
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or name not in allowed or not isinstance(args, dict):
        return None
    return ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=args)


def _many(raw: Any, allowed: set[str]) -> list[ToolCall] | None:
    items = raw if isinstance(raw, list) else [raw]
    if not items or len(items) > MAX_CALLS:
        return None
    calls = [_one(x, allowed) for x in items]
    if any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_text_tool_calls(text: str, allowed: set[str]) -> list[ToolCall] | None:
    """The calls the whole of ``text`` is, or None when it is (also) something else."""
    body = text.strip()
    if not body or not allowed:
        return None
    tags = list(_TAG.finditer(body))
    if tags:
        if _TAG.sub("", body).strip():
            return None   # prose around the tags: text
        out: list[ToolCall] = []
        for m in tags:
            inner = _FENCE.match(m.group(1).strip())
            got = _many(_loads(inner.group(1) if inner else m.group(1)), allowed)
            if got is None:
                return None
            out += got
        return out if len(out) <= MAX_CALLS else None
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    if not body.startswith(("{", "[")):
        return None
    return _many(_loads(body), allowed)
