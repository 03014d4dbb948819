"""What a rule's regular expression cannot match without: literal strings read from its
parse tree, checked with ``str.find`` before the (slower) regular-expression search.

A :class:`Plan` is a set of alternatives; each is a chain of steps in match order, and each
step a few strings one of which every match contains there. ``start(plan, s, lo, hi)`` is -1
when no match can lie in ``s[lo:hi]`` (some step of every alternative is missing, or out of
order), else a position no match starts before: the search may begin there and finds the
same first match. Only literal text is read (zero-width assertions are skipped, character
classes and unbounded repeats end a literal run), so the check never rejects a text the
expression matches: it only saves the search's time.

The plan is built from ``re``'s own parser (``re._parser``); a pattern it cannot read
(case-insensitive, backreferences, a parser that changed) gets no plan and is searched as
before.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Plan", "plan", "start"]

#: largest set of strings a run of literal items may stand for before it is cut
_MAXSET = 64
#: most strings a step keeps (longer sets are cut to shorter prefixes or suffixes)
_MAXSTEP = 64
_EMPTY: frozenset[str] = frozenset([""])


class Unsupported(Exception):
    """The pattern uses something the analysis does not read."""


@dataclass(frozen=True)
class Plan:
    #: (steps, anchored) per alternative; a step is (strings, length of the shortest);
    #: ``anchored``: the first step's strings start every match of that alternative
    alternatives: tuple[tuple[tuple[tuple[tuple[str, ...], int], ...], bool], ...]


@dataclass(frozen=True)
class _Info:
    #: every string the node can match (None: too many or unbounded)
    exact: frozenset[str] | None
    #: required sets in match order, non-overlapping (only when ``exact`` is None)
    steps: tuple[frozenset[str], ...] = ()
    #: ``steps[0]`` begins every match of the node
    prefix: bool = False


_NONE = _Info(None)


def _cross(a: frozenset[str], b: frozenset[str]) -> frozenset[str] | None:
    if len(a) * len(b) > _MAXSET:
        return None
    return frozenset(x + y for x in a for y in b)


class _Reader:
    def __init__(self) -> None:
        self.c: Any = importlib.import_module("re._constants")

    def seq(self, items: Any) -> _Info:
        steps: list[frozenset[str]] = []
        first_prefix = False
        run: frozenset[str] = _EMPTY       # the open run of literal items
        run_at_start = True                # it begins every match of the sequence
        at_start = True                    # nothing before this point consumes a character
        exact = True                       # every item so far is literal, the run uncut

        def emit(strings: frozenset[str], at0: bool) -> None:
            nonlocal first_prefix
            if "" in strings:
                return
            if not steps:
                first_prefix = at0
            steps.append(strings)

        for i in self.items(items):
            if i.exact is not None:
                nxt = _cross(run, i.exact)
                if nxt is None:
                    emit(run, run_at_start)
                    run, run_at_start, exact = i.exact, at_start, False
                else:
                    run = nxt
                if i.exact != _EMPTY:
                    at_start = False
            else:
                emit(run, run_at_start)
                for k, st in enumerate(i.steps):
                    emit(st, at_start and i.prefix and k == 0)
                run, run_at_start, at_start, exact = _EMPTY, False, False, False
        if exact:
            return _Info(run)
        emit(run, run_at_start)
        return _Info(None, tuple(steps), first_prefix)

    def items(self, items: Any) -> list[_Info]:
        """The nodes of a sequence, consecutive literal characters joined into one."""
        out: list[_Info] = []
        chars: list[str] = []
        for op, av in items:
            if op is self.c.LITERAL:
                chars.append(chr(av))
                continue
            if chars:
                out.append(_Info(frozenset(["".join(chars)])))
                chars = []
            out.append(self.node(op, av))
        if chars:
            out.append(_Info(frozenset(["".join(chars)])))
        return out

    def node(self, op: Any, av: Any) -> _Info:
        c = self.c
        if op is c.LITERAL:
            return _Info(frozenset([chr(av)]))
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return _Info(_EMPTY)
        if op is c.IN:
            chars: list[str] = []
            for o, a in av:
                if o is c.LITERAL:
                    chars.append(chr(a))
                elif o is c.RANGE and a[1] - a[0] < 8:
                    chars.extend(chr(x) for x in range(a[0], a[1] + 1))
                else:
                    return _NONE
            return _Info(frozenset(chars)) if 0 < len(chars) <= 8 else _NONE
        if op in (c.NOT_LITERAL, c.ANY, c.CATEGORY):
            return _NONE
        if op is c.SUBPATTERN:
            _group, add_flags, _del_flags, sub = av
            if add_flags & (c.SRE_FLAG_IGNORECASE | c.SRE_FLAG_LOCALE):
                raise Unsupported("case-insensitive group")
            return self.seq(sub)
        if op is c.ATOMIC_GROUP:
            return self.seq(av)
        if op is c.BRANCH:
            return self.branch([self.seq(alt) for alt in av[1]])
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            i = self.seq(sub)
            if lo == 0:
                if hi == 1 and i.exact is not None:
                    return _Info(i.exact | _EMPTY)
                return _NONE
            if i.exact is not None:
                if lo == hi:
                    ex: frozenset[str] | None = _EMPTY
                    for _ in range(lo):
                        ex = _cross(ex, i.exact) if ex is not None else None
                    if ex is not None:
                        return _Info(ex)
                return _Info(None, (i.exact,), True) if "" not in i.exact else _NONE
            return _Info(None, i.steps, i.prefix)    # one repetition at least
        raise Unsupported(f"operator {op}")

    def branch(self, alts: list[_Info]) -> _Info:
        if all(a.exact is not None for a in alts):
            u = frozenset().union(*(a.exact for a in alts if a.exact is not None))
            if len(u) <= _MAXSET:
                return _Info(u)
        # one set for the whole branch: each alternative's first step when every one has
        # one at its start, else each one's best step
        firsts: list[frozenset[str]] = []
        bests: list[frozenset[str]] = []
        for a in alts:
            steps = (a.exact,) if a.exact is not None else a.steps
            good = [s for s in steps if "" not in s]
            if not good:
                return _NONE
            bests.append(max(good, key=_quality))
            if a.exact is not None and "" not in a.exact:
                firsts.append(a.exact)
            elif a.exact is None and a.prefix:
                firsts.append(a.steps[0])
        if len(firsts) == len(alts):
            u = frozenset().union(*firsts)
            if _quality(u) >= (3, -_MAXSTEP * 2):
                return _Info(None, (u,), True)
        return _Info(None, (frozenset().union(*bests),), False)


def _quality(strings: frozenset[str] | tuple[str, ...]) -> tuple[int, int]:
    """Longer shortest member first, then fewer members."""
    return (min(len(s) for s in strings), -len(strings))


def _minimal(strings: frozenset[str], anchored: bool) -> frozenset[str]:
    """Drop members that contain another member (a prefix of it when ``anchored``): an
    occurrence of the longer one is one of the shorter one."""
    out: list[str] = []
    for s in sorted(strings, key=len):
        if anchored:
            if not s.startswith(tuple(out)):
                out.append(s)
        elif not any(t in s for t in out):
            out.append(s)
    return frozenset(out)


def _cut(strings: frozenset[str], anchored: bool) -> frozenset[str]:
    """Fewer strings to look for (each costs a ``find``) when members share a start (or,
    unanchored, an end): cut to their first (last) k characters, for the largest k that
    leaves no more than a quarter of them or than cutting to 4 characters would. Only
    when that at least halves them (a shorter string is found in more texts) or when
    there are more than ``_MAXSTEP``. An occurrence of a member is one of its cut form, so
    the step stays sound. An empty set when more than ``_MAXSTEP`` are left."""
    strings = _minimal(strings, anchored)
    n = len(strings)
    floor = 4
    longest = max(len(s) for s in strings)
    best = strings
    if longest > floor:
        for tail in ((False,) if anchored else (False, True)):
            def cut(k: int, tail: bool = tail) -> frozenset[str]:
                return frozenset(s[-k:] if tail else s[:k] for s in strings)
            target = max(len(cut(floor)), n // 4)
            if target > n // 2 and n <= _MAXSTEP:
                continue
            for k in range(longest, floor - 1, -1):
                c = cut(k)
                if len(c) <= target:
                    c = _minimal(c, anchored and not tail)
                    if (len(c), -min(len(s) for s in c)) < (len(best), -min(len(s) for s in best)):
                        best = c
                    break
    return best if len(best) <= _MAXSTEP else frozenset()


def _weak(strings: tuple[str, ...]) -> bool:
    """A step not worth its ``find`` calls: a member of one or two characters that are
    letters, digits or spaces (found almost everywhere)."""
    return any(len(s) < 3 and any(ch.isalnum() or ch.isspace() for ch in s) for s in strings)


def _alternatives(items: Any, c: Any) -> list[Any]:
    """The top-level alternatives of a pattern (zero-width items around a single branch
    are repeated into each alternative)."""
    zw = (c.AT, c.ASSERT, c.ASSERT_NOT)
    body = [(op, av) for op, av in items if op not in zw]
    if len(body) != 1 or body[0][0] is not c.BRANCH:
        return [list(items)]
    k = next(n for n, (op, _av) in enumerate(items) if op is c.BRANCH)
    head, tail = list(items[:k]), list(items[k + 1:])
    return [head + list(alt) + tail for alt in items[k][1][1]]


def plan(pattern: re.Pattern[str]) -> Plan | None:
    """The literal pre-check of ``pattern``, or None when it has none worth running."""
    if pattern.flags & (re.IGNORECASE | re.LOCALE):
        return None
    try:
        parser: Any = importlib.import_module("re._parser")
        reader = _Reader()
        tree = parser.parse(pattern.pattern, pattern.flags)
        alts = []
        for items in _alternatives(tree.data, reader.c):
            info = reader.seq(items)
            if info.exact is not None:
                steps: tuple[frozenset[str], ...] = (info.exact,)
                anchored = True
            else:
                steps, anchored = info.steps, info.prefix
            chain = []
            for n, strings in enumerate(steps):
                cut = tuple(sorted(_cut(strings, anchored and n == 0)))
                if not cut or "" in cut or _weak(cut):     # skipped: the chain stays sound
                    anchored = anchored and n > 0
                    continue
                chain.append((cut, min(len(s) for s in cut)))
            if not chain:
                return None          # an alternative with no literal: nothing to check
            alts.append((tuple(chain), anchored))
    except (Unsupported, AttributeError, ImportError, TypeError, ValueError, re.error):
        return None
    return Plan(tuple(alts))


def start(p: Plan, s: str, lo: int, hi: int) -> int:
    """-1 when no match of the planned pattern lies in ``s[lo:hi]``; else a position in
    ``[lo, hi)`` before which no match starts."""
    best = -1
    for chain, anchored in p.alternatives:
        pos, first = lo, -1
        for strings, shortest in chain:
            at = -1
            for f in strings:
                i = s.find(f, pos, hi if at < 0 else at + len(f) - 1)
                if i >= 0:
                    at = i
            if at < 0:
                break
            if first < 0:
                first = at
            pos = at + shortest
        else:
            q = first if anchored else lo
            if best < 0 or q < best:
                best = q
                if best == lo:
                    return best
    return best
