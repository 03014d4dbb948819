"""What a rule's regular expression cannot match without: literal strings read from its
parse tree, looked for with ``in`` and ``str.find`` before the (slower) regular-expression
search.

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
from itertools import repeat
from typing import Any

__all__ = ["Alternative", "Plan", "plan", "search", "start"]

#: largest set of strings a run of literal items may stand for before it is cut
_MAXSET = 64
#: most strings a step keeps (longer sets are cut to shorter prefixes or suffixes)
_MAXSTEP = 64
_EMPTY: frozenset[str] = frozenset([""])
#: strings of a step are cut to this many characters when that leaves fewer of them
_CUT = 6


class Unsupported(Exception):
    """The pattern uses something the analysis does not read."""


#: steps in match order; a step is (strings, length of the shortest)
Chain = tuple[tuple[tuple[str, ...], int], ...]


class Alternative:
    """One alternative of a plan: its chain of steps, whether the first step starts every
    match, and (in a split plan) the source of the alternative, compiled alone on the
    first search that gets past its chain."""

    __slots__ = ("_compiled", "anchored", "by_size", "chain", "flags", "source")

    def __init__(self, chain: Chain, anchored: bool, source: str | None = None,
                 flags: int = 0) -> None:
        self.chain = chain
        self.anchored = anchored
        self.source = source
        self.flags = flags
        self._compiled: re.Pattern[str] | None = None
        #: the steps' strings, the smallest step first (for the quick rejection)
        self.by_size = tuple(sorted((st for st, _n in chain), key=len))

    @property
    def pattern(self) -> re.Pattern[str]:
        if self._compiled is None:
            assert self.source is not None
            self._compiled = re.compile(self.source, self.flags)
        return self._compiled

    def __repr__(self) -> str:
        return f"Alternative({self.chain!r}, {self.anchored!r}, {self.source!r})"


class Plan:
    """``alternatives``; ``split``: they are the pattern's top-level ``|`` alternatives, each
    searchable alone; ``any_of``: with several alternatives, the strings of each one's
    smallest step (when none is in the window, no alternative can match: one check instead
    of one per alternative)."""

    __slots__ = ("alternatives", "any_of", "costly", "split")

    def __init__(self, alternatives: tuple[Alternative, ...], split: bool,
                 any_of: tuple[str, ...] = (), costly: bool = False) -> None:
        self.alternatives = alternatives
        self.split = split
        self.any_of = any_of
        #: the pattern has the shape whose failed searches backtrack most (a long gap of any
        #: characters, then an alternation that is not a plain list of strings)
        self.costly = costly

    def __repr__(self) -> str:
        return (f"Plan({self.alternatives!r}, {self.split!r}, {self.any_of!r}, "
                f"{self.costly!r})")


class _Info:
    """What the analysis knows of a node: ``exact``, every string it can match (None: too
    many or unbounded); ``steps``, required sets in match order, non-overlapping (only when
    ``exact`` is None); ``prefix``: ``steps[0]`` begins every match of the node."""

    __slots__ = ("exact", "prefix", "steps")

    def __init__(self, exact: frozenset[str] | None, steps: tuple[frozenset[str], ...] = (),
                 prefix: bool = False) -> None:
        self.exact = exact
        self.steps = steps
        self.prefix = prefix


_NONE = _Info(None)


def _cross(a: frozenset[str], b: frozenset[str]) -> frozenset[str] | None:
    if len(a) * len(b) > _MAXSET:
        return None
    return frozenset(x + y for x in a for y in b)


class _Reader:
    def __init__(self) -> None:
        self.c: Any = importlib.import_module("re._constants")
        self.costly = False

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
        """The nodes of a sequence, consecutive literal characters joined into one. Notes
        in ``costly`` a long gap of any characters followed by an alternation that is not a
        plain list of strings (the shape whose failed searches backtrack most)."""
        c = self.c
        out: list[_Info] = []
        chars: list[str] = []
        after_gap = False
        for op, av in items:
            if op is c.LITERAL:
                chars.append(chr(av))
                after_gap = False
                continue
            if chars:
                out.append(_Info(frozenset(["".join(chars)])))
                chars = []
            info = self.node(op, av)
            out.append(info)
            if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
                continue
            if after_gap and op in (c.SUBPATTERN, c.BRANCH) and info.exact is None:
                self.costly = True
            after_gap = op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[1] >= 30 and \
                info.exact is None and not info.steps
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
    unanchored, an end): cut them to their first (last) 6 characters, then to the longest
    length that leaves no more, when that at least halves them. An occurrence of a member
    is one of its cut form, so the step stays sound. An empty set when more than
    ``_MAXSTEP`` are left."""
    strings = _minimal(strings, anchored)
    longest = max(len(s) for s in strings)
    best = strings
    if longest > _CUT:
        for tail in ((False,) if anchored else (False, True)):
            ends = [s[::-1] for s in strings] if tail else list(strings)
            groups: dict[str, list[str]] = {}
            for e in ends:
                groups.setdefault(e[:_CUT], []).append(e)
            if 2 * len(groups) > len(strings) and len(strings) <= _MAXSTEP:
                continue                    # would not halve them
            # the longest cut that keeps each group one string: its members' common start
            k = max(_CUT, min((_common_start(g) for g in groups.values() if len(g) > 1),
                              default=longest))
            c = frozenset(e[:k][::-1] if tail else e[:k] for e in ends)
            c = _minimal(c, anchored and not tail)
            if (len(c), -min(map(len, c))) < (len(best), -min(map(len, best))):
                best = c
    if len(best) * 2 > len(strings) and len(strings) <= _MAXSTEP:
        return strings              # not worth the lost precision: found in more texts
    return best if len(best) <= _MAXSTEP else frozenset()


def _common_start(strings: list[str]) -> int:
    """How many characters all of ``strings`` start with (those of the first and the last in
    sorted order)."""
    a, b = min(strings), max(strings)
    n = 0
    while n < len(a) and a[n] == b[n]:
        n += 1
    return n


def _weak(strings: tuple[str, ...]) -> bool:
    """A step not worth its ``find`` calls: a member of one or two characters that are
    letters, digits or spaces (found almost everywhere)."""
    return any(len(s) < 3 and any(ch.isalnum() or ch.isspace() for ch in s) for s in strings)


def _alternatives(items: Any, c: Any) -> list[Any]:
    """The alternatives of a parsed pattern for the pre-check (zero-width items around a
    single branch are repeated into each alternative)."""
    zw = (c.AT, c.ASSERT, c.ASSERT_NOT)
    body = [(op, av) for op, av in items if op not in zw]
    if len(body) != 1 or body[0][0] is not c.BRANCH:
        return [list(items)]
    k = next(n for n, (op, _av) in enumerate(items) if op is c.BRANCH)
    head, tail = list(items[:k]), list(items[k + 1:])
    return [head + list(alt) + tail for alt in items[k][1][1]]


def _split(source: str) -> list[str]:
    """``source`` cut at its top-level ``|`` (outside groups and character classes); a
    source that is one non-capturing group is cut inside it."""
    out: list[str] = []
    depth = first = i = 0
    n = len(source)
    wrapped = source.startswith("(?:")     # stays true while that group is still open
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":                       # a class: skip to its end
            i += 1
            if i < n and source[i] == "^":
                i += 1
            if i < n and source[i] == "]":
                i += 1
            while i < n and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i < n - 1:
                wrapped = False
        elif ch == "|" and depth == 0:
            out.append(source[first:i])
            first = i + 1
        i += 1
    out.append(source[first:])
    if len(out) == 1 and wrapped and source.endswith(")") and len(source) > 4:
        inner = _split(source[3:-1])
        if len(inner) > 1:
            return inner
    return out


_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]")
_BACKREF = re.compile(r"\\\d|\(\?P=")


def _chain(items: Any, reader: _Reader) -> tuple[Chain, bool]:
    info = reader.seq(items)
    if info.exact is not None:
        steps: tuple[frozenset[str], ...] = (info.exact,)
        anchored = True
    else:
        steps, anchored = info.steps, info.prefix
    chain = []
    for n, strings in enumerate(steps):
        cut = _cut(strings, anchored and n == 0)
        if anchored and n == 0:
            loose = _cut(strings, False)    # found anywhere in the match: maybe far fewer
            if loose and 2 * len(loose) <= len(cut):
                cut, anchored = loose, False
        if not cut or "" in cut or _weak(tuple(cut)):   # skipped: the chain stays sound
            anchored = anchored and n > 0
            continue
        chain.append((tuple(sorted(cut)), min(len(s) for s in cut)))
    return tuple(chain), anchored and bool(chain)


def plan(pattern: re.Pattern[str]) -> Plan | None:
    """The literal pre-check of ``pattern``, or None when it has none worth running."""
    if pattern.flags & (re.IGNORECASE | re.LOCALE | re.VERBOSE):
        return None
    source = pattern.pattern
    try:
        parser: Any = importlib.import_module("re._parser")
        reader = _Reader()
        pieces = _split(source)
        if len(pieces) > 1 and not _INLINE_FLAGS.search(source) and not _BACKREF.search(
                source):
            chains = [_chain(parser.parse(p, pattern.flags).data, reader) for p in pieces]
            alts = tuple(Alternative(*_afford(ch, reader.costly), p, pattern.flags)
                         for ch, p in zip(chains, pieces, strict=True))
            return _with_any_of(Plan(alts, True, costly=reader.costly))
        tree = parser.parse(source, pattern.flags)
        chains = [_chain(items, reader) for items in _alternatives(tree.data, reader.c)]
    except (Unsupported, AttributeError, ImportError, TypeError, ValueError, re.error):
        return None
    chains = [_afford(ch, reader.costly) for ch in chains]
    if any(not chain for chain, _anchored in chains):
        return None                # an alternative with no literal: nothing to check
    if len(chains) > 1 and all(len(chain) == 1 for chain, _anchored in chains):
        # one step each: a single step of all their strings is the same check, in one loop
        strings = frozenset(s for chain, _a in chains for s in chain[0][0])
        step = (tuple(sorted(_minimal(strings, False))), min(map(len, strings)))
        anchored = all(a for _chain_, a in chains)
        if anchored:
            step = (tuple(sorted(_minimal(strings, True))), step[1])
        chains = [((step,), anchored)]
    alternatives = tuple(Alternative(chain, anchored) for chain, anchored in chains)
    return _with_any_of(Plan(alternatives, False, costly=reader.costly))


#: most strings a chain may look for when the pattern's own search is cheap
_BUDGET = 24


def _afford(chain: tuple[Chain, bool], costly: bool) -> tuple[Chain, bool]:
    """No check when it would cost more ``find`` calls than a cheap pattern's search."""
    steps, anchored = chain
    if not costly and sum(len(strings) for strings, _n in steps) > _BUDGET:
        return (), False
    return steps, anchored


def _start(a: Alternative, w: str) -> int:
    """-1 when alternative ``a`` cannot match in the window ``w`` (``s[lo:hi]``), else a
    position in ``w`` no match of it starts before. The loops over a step's strings run in
    C (``map``): a step's strings are looked for all at once."""
    chain = a.chain
    if len(chain) > 1:              # each step somewhere first, the fewest strings first
        contains = w.__contains__
        for strings in a.by_size:
            if not any(map(contains, strings)):
                return -1
    elif not a.anchored:            # one step, no start to find: somewhere is enough
        return 0 if any(map(w.__contains__, chain[0][0])) else -1
    pos = 0
    first = -1
    find = w.find
    for strings, shortest in chain:
        found = set(map(find, strings, repeat(pos)))
        found.discard(-1)
        if not found:
            return -1
        at = min(found)
        if first < 0:
            first = at
        pos = at + shortest
    return first if a.anchored else 0


def _with_any_of(p: Plan) -> Plan:
    if len(p.alternatives) < 2 or any(not a.chain for a in p.alternatives):
        return p
    strings = frozenset(f for a in p.alternatives for f in a.by_size[0])
    return Plan(p.alternatives, p.split, tuple(sorted(_minimal(strings, False))), p.costly)


def start(p: Plan, s: str, lo: int, hi: int) -> int:
    """-1 when no match of the planned pattern lies in ``s[lo:hi]``; else a position in
    ``[lo, hi)`` before which no match starts."""
    w = s[lo:hi]
    if p.any_of and not any(map(w.__contains__, p.any_of)):
        return -1
    best = -1
    for a in p.alternatives:
        q = _start(a, w)
        if q >= 0 and (best < 0 or q < best):
            best = q
            if best == 0:
                break
    return best if best < 0 else lo + best


def search(p: Plan, pattern: re.Pattern[str], s: str, lo: int, hi: int
           ) -> re.Match[str] | None:
    """``pattern.search(s, lo, hi)``, searching only where the plan allows. A split plan
    searches each top-level alternative that can match on its own: the first match is the
    leftmost one, and at equal starts the one of the earliest alternative, which is the
    match the whole pattern finds there."""
    if not p.split:
        q = start(p, s, lo, hi)
        return None if q < 0 else pattern.search(s, q, hi)
    w = s[lo:hi]
    if p.any_of and not any(map(w.__contains__, p.any_of)):
        return None
    best: re.Match[str] | None = None
    for a in p.alternatives:
        q = _start(a, w)
        if q < 0 or (best is not None and lo + q >= best.start()):
            continue
        try:
            alone = a.pattern               # compiled on first use (it parsed above)
        except re.error:                    # not on its own after all: the whole pattern
            return pattern.search(s, lo, hi)
        m = alone.search(s, lo + q, hi)
        if m is not None and (best is None or m.start() < best.start()):
            best = m
    return best
