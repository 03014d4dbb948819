"""Risk rules: pure evaluation of a parsed action against YAML rules.

The user's rules are evaluated before the built-in ones; the first rule whose action type and
parameter predicates all match gives the level. Fail closed everywhere: an unknown action type,
unparseable parameters or no matching rule give ``high``; a rules file that does not validate is
refused as a whole (:class:`~closedpaw.errors.RulesError`), never partly applied. Touching
ClosedPaw's own data directory or rules file is ``critical`` whatever the rules say.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from closedpaw.errors import RulesError
from closedpaw.gate.actions import ACTION_TYPES, ParsedAction, RiskLevel
from closedpaw.gate.protect import Protected

__all__ = ["Decision", "Rule", "RuleSet", "raise_to"]

PREDICATES = ("equals", "one_of", "under", "not_under", "startswith", "matches")
#: parts of a parsed URL a rule may test (``url.host: {equals: example.org}``); a string
#: predicate on the whole URL is refused: ``http://trusted.example@127.0.0.1/`` starts with
#: ``http://trusted.example`` and goes to 127.0.0.1
URL_PARTS = ("url.scheme", "url.host", "url.port", "url.path")
_URL_STRING_PREDICATES = ("under", "not_under", "startswith", "matches")


def url_parts(url: Any) -> dict[str, Any]:
    """scheme, host (lower case, no userinfo), port (the scheme's default when absent) and
    path of ``url``; {} when it does not parse."""
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        return {}
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return {}
    if not u.scheme or not u.hostname:
        return {}
    scheme = u.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return {"url.scheme": scheme, "url.host": u.hostname.rstrip(".").lower(),
            "url.port": port, "url.path": posixpath.normpath(u.path or "/")}


@dataclass(frozen=True)
class Decision:
    level: RiskLevel
    reason: str


def raise_to(d: Decision, min_level: RiskLevel | None, why: str | None = None) -> Decision:
    """``d`` raised to the caller's floor ``min_level`` (never lowered). The caller's ``why``
    joins the reason either way, marked as the caller's, so the approver sees it."""
    if min_level is None:
        return d
    asked = f"the caller asked for at least {min_level}" + (f": {why}" if why else "")
    if min_level.rank > d.level.rank:
        return Decision(min_level, f"raised to {min_level} by the caller"
                        + (f": {why}" if why else "") + f" ({d.reason})")
    return Decision(d.level, f"{d.reason}; {asked}" if why else d.reason)


@dataclass(frozen=True)
class Rule:
    action_type: str
    when: tuple[tuple[str, str, Any], ...]   # (parameter, predicate, operand)
    level: RiskLevel
    reason: str
    source: str

    def matches(self, params: Mapping[str, Any]) -> bool:
        if any(name in URL_PARTS for name, _, _ in self.when):
            params = {**params, **url_parts(params.get("url"))}
        return all(_check(params.get(name), pred, arg) for name, pred, arg in self.when)


def _under(value: Any, root: Any) -> bool:
    if not isinstance(value, str):
        return False
    root = posixpath.normpath(str(root))
    v = posixpath.normpath(value)
    return v == root or v.startswith(root.rstrip("/") + "/")


def _check(value: Any, pred: str, arg: Any) -> bool:
    if pred == "equals":
        return bool(value == arg and type(value) is type(arg))
    if pred == "one_of":
        return any(value == a and type(value) is type(a) for a in arg)
    if pred == "under":
        return _under(value, arg)
    if pred == "not_under":
        return isinstance(value, str) and not _under(value, arg)
    if pred == "startswith":
        return isinstance(value, str) and value.startswith(arg)
    if pred == "matches":
        return isinstance(value, str) and re.fullmatch(arg, value) is not None
    raise AssertionError(pred)


def _parse_rules(doc: Any, source: str, subst: Mapping[str, str]) -> list[Rule]:
    def fail(where: str, problem: str) -> RulesError:
        return RulesError(f"{source}: {where}: {problem}")

    if not isinstance(doc, dict) or set(doc) - {"version", "rules"}:
        raise fail("top level", "must be a mapping with 'version: 1' and 'rules'")
    if doc.get("version") != 1:
        raise fail("version", "must be 1")
    items = doc.get("rules") or []
    if not isinstance(items, list):
        raise fail("rules", "must be a list")
    out: list[Rule] = []
    for i, item in enumerate(items):
        where = f"rules[{i}]"
        if not isinstance(item, dict):
            raise fail(where, "must be a mapping")
        extra = set(item) - {"action_type", "when", "level", "reason"}
        if extra:
            raise fail(where, f"unknown key {sorted(extra)[0]!r}")
        at = item.get("action_type")
        if at not in ACTION_TYPES:
            raise fail(f"{where}.action_type", f"{at!r} is not one of {sorted(ACTION_TYPES)}")
        try:
            level = RiskLevel(str(item.get("level")))
        except ValueError:
            raise fail(f"{where}.level", "must be low, medium, high or critical") from None
        when = item.get("when") or {}
        if not isinstance(when, dict):
            raise fail(f"{where}.when", "must be a mapping of parameter -> predicate")
        fields = ACTION_TYPES[at].model_fields
        conds: list[tuple[str, str, Any]] = []
        for name, spec in when.items():
            if name not in fields and not (at == "network_request" and name in URL_PARTS):
                raise fail(f"{where}.when.{name}", f"{at} has no parameter {name!r}")
            if not isinstance(spec, dict) or len(spec) != 1:
                raise fail(f"{where}.when.{name}", f"must be one of {', '.join(PREDICATES)}")
            ((pred, arg),) = spec.items()
            if pred not in PREDICATES:
                raise fail(f"{where}.when.{name}", f"unknown predicate {pred!r}")
            if at == "network_request" and name == "url" and pred in _URL_STRING_PREDICATES:
                raise fail(f"{where}.when.url", f"{pred} on a whole URL is refused (it "
                           "matches http://trusted.example@127.0.0.1/ for trusted.example); "
                           f"test its parsed parts instead: {', '.join(URL_PARTS)}")
            if isinstance(arg, str):
                try:
                    arg = arg.format_map(subst)
                except (KeyError, ValueError, IndexError) as e:
                    raise fail(f"{where}.when.{name}", f"bad placeholder {e}") from None
            if pred == "one_of" and not isinstance(arg, list):
                raise fail(f"{where}.when.{name}", "one_of takes a list")
            if pred in ("under", "not_under", "startswith", "matches") and not isinstance(
                    arg, str):
                raise fail(f"{where}.when.{name}", f"{pred} takes a string")
            if pred == "matches":
                try:
                    re.compile(arg)
                except re.error as e:
                    raise fail(f"{where}.when.{name}", f"bad regular expression: {e}") from None
            conds.append((name, pred, arg))
        reason = item.get("reason") or f"{source} {where}"
        if not isinstance(reason, str):
            raise fail(f"{where}.reason", "must be a string")
        out.append(Rule(at, tuple(conds), level, reason, f"{source} {where}"))
    return out


class RuleSet:
    """Rules in evaluation order, plus the protected state that is always critical."""

    def __init__(self, rules: list[Rule], *, data_dir: str = "", rules_file: str = "",
                 workspace: str = "", extra_protected: tuple[str, ...] = ()) -> None:
        self.rules = rules
        self.data_dir = data_dir
        self.rules_file = rules_file
        # the workspace may live in the data directory; only then is it carved out of it
        self.workspace = (workspace if data_dir and workspace != data_dir
                          and _under(workspace, data_dir) else "")
        self.protected = (Protected(data_dir=data_dir, rules_file=rules_file or None,
                                    workspace=self.workspace or None, extra=extra_protected)
                          if data_dir else None)

    @classmethod
    def load(cls, *, user_file: Path | None, workspace: Path, data_dir: Path,
             rules_file: Path, extra_protected: tuple[str, ...] = ()) -> RuleSet:
        import yaml  # lazy: not on the 'closedpaw run' path

        subst = {"workspace": str(workspace), "data_dir": str(data_dir),
                 "rules_file": str(rules_file)}

        def parse(text: str, source: str) -> list[Rule]:
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise RulesError(f"{source}: not valid YAML: {e}") from None
            return _parse_rules(doc, source, subst)

        builtin = resources.files("closedpaw.gate").joinpath("default_rules.yaml")
        rules = parse(builtin.read_text(), "built-in rules")
        if user_file is not None and user_file.exists():
            try:
                text = user_file.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise RulesError(f"{user_file}: cannot read: {e}") from None
            rules = parse(text, str(user_file)) + rules
        return cls(rules, data_dir=posixpath.normpath(str(data_dir)),
                   rules_file=posixpath.normpath(str(rules_file)),
                   workspace=posixpath.normpath(str(workspace)),
                   extra_protected=extra_protected)

    def protects(self, path: Any) -> str | None:
        """Why ``path`` is ClosedPaw's own state (always critical), or None: judged on the
        object it resolves to (see :mod:`closedpaw.gate.protect`)."""
        if self.protected is not None:
            return self.protected.why(path)
        if self.rules_file and _under(path, self.rules_file):
            return f"the rules file {self.rules_file}"
        return None

    def classify(self, action: ParsedAction, min_level: RiskLevel | None = None,
                 why: str | None = None) -> Decision:
        return raise_to(self._classify(action), min_level, why)

    def _classify(self, action: ParsedAction) -> Decision:
        if action.action is None:
            return Decision(RiskLevel.HIGH, action.problem or "unparseable")
        params = action.parameters
        if action.action_type in ("file_read", "file_write"):
            why = self.protects(params.get("path"))
            if why:
                return Decision(RiskLevel.CRITICAL, f"touches ClosedPaw's own configuration: "
                                f"{why}")
        for rule in self.rules:
            if rule.action_type == action.action_type and rule.matches(params):
                if rule.level.rank < RiskLevel.HIGH.rank and action.action_type == \
                        "file_read" and _links(params.get("path")) > 1:
                    return Decision(RiskLevel.HIGH, f"{params.get('path')} has more than one "
                                    f"name (a hard link): judged as a read outside the "
                                    f"workspace ({rule.reason} does not apply)")
                return Decision(rule.level, rule.reason)
        return Decision(RiskLevel.HIGH, "no rule matched")


def _links(path: Any) -> int:
    """The link count of the file ``path`` names (0 when it cannot be told)."""
    import os

    try:
        return os.stat(path).st_nlink if isinstance(path, str) else 0
    except OSError:
        return 0
