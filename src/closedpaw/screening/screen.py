"""``screen(text)``: the verdict on one text. A signal, never a block: the caller marks
flagged content untrusted and raises the risk of what follows; nothing is dropped here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from closedpaw.screening.normalize import invisible_counts, views_and_invisible
from closedpaw.screening.rules import hit_keys, woken

__all__ = ["CHUNK_CHARS", "THRESHOLD", "ScreenResult", "Span", "screen"]

THRESHOLD = 0.5
#: longer texts are screened in overlapping chunks of this many characters (linear time)
CHUNK_CHARS = 65_536
_OVERLAP = 1_024
_ENC = ("encoded_payload",)
_DECODED: dict[str, tuple[str, ...]] = {
    "base64": _ENC, "hex": _ENC, "url": _ENC, "rot13": _ENC, "leet": _ENC, "reversed": _ENC,
    "morse": _ENC, "escapes": _ENC, "tags": ("hidden_unicode",), "hidden": ("hidden_markup",),
    "hidden_base64": ("hidden_markup", "encoded_payload"), "unmarked": ("hidden_unicode",),
    "squeezed": _ENC, "caesar": _ENC, "decimal": _ENC, "binary": _ENC, "base32": _ENC}


#: views whose content is also in the text view by construction (hidden markup): a rule
#: matching there counts the view's signal even though it matched the text too
_INSIDE_TEXT = frozenset({"hidden"})


class _KeyPlaces(dict[str, tuple[int, int]]):
    """key -> ``(s.find(key), s.rfind(key))`` of one view, found on first use (rules that
    share a key share the two finds)."""

    def __init__(self, s: str) -> None:
        super().__init__()
        self.s = s

    def __missing__(self, key: str) -> tuple[int, int]:
        self[key] = places = (self.s.find(key), self.s.rfind(key))
        return places


@dataclass(frozen=True)
class Span:
    """Where a detector matched: offsets into the named view (``text`` is the normalised
    text; decoded views are the decoded strings)."""

    label: str
    rule: str
    view: str
    start: int
    end: int
    excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "rule": self.rule, "view": self.view,
                "start": self.start, "end": self.end, "excerpt": self.excerpt}


@dataclass(frozen=True)
class ScreenResult:
    flagged: bool
    score: float
    labels: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "score": self.score, "labels": list(self.labels),
                "spans": [s.to_dict() for s in self.spans]}


def screen(text: str, *, threshold: float = THRESHOLD) -> ScreenResult:
    """Screen ``text`` (any length, in overlapping chunks when long; pure, no I/O)."""
    if not isinstance(text, str):
        raise TypeError("screen() takes a str")
    weights: dict[str, float] = {}        # rule or signal -> weight (each counted once)
    labels: dict[str, None] = {}
    spans: list[Span] = []
    step = CHUNK_CHARS - _OVERLAP
    for start in range(0, max(len(text), 1), step):
        _screen_chunk(text[start:start + CHUNK_CHARS], weights, labels, spans)
        if start + CHUNK_CHARS >= len(text):
            break
    keep = 1.0
    for w in weights.values():
        keep *= 1.0 - w
    score = round(1.0 - keep, 4)
    return ScreenResult(flagged=score >= threshold, score=score, labels=list(labels),
                        spans=spans)


def _screen_chunk(text: str, weights: dict[str, float], labels: dict[str, None],
                  spans: list[Span]) -> None:
    seen_in_text: set[str] = set()
    found, invisible = views_and_invisible(text)
    for view, s in found:
        hit = hit_keys(s)
        again = view != "text" and view not in _INSIDE_TEXT
        rules = woken(hit)
        if again and seen_in_text:          # already counted from the text view
            rules = [r for r in rules if r.name not in seen_in_text]
        at = _KeyPlaces(s) if len(rules) > 1 else None
        for rule in rules:
            m = rule.search(s, hit, at)
            if m is None:
                continue
            if view == "text":
                seen_in_text.add(rule.name)
            weights[rule.name] = max(weights.get(rule.name, 0.0), rule.weight)
            labels[rule.label] = None
            if len(spans) < 32:
                spans.append(Span(rule.label, rule.name, view, m.start(), m.end(),
                                  m.group(0)[:120]))
            extra = _DECODED.get(view)
            if extra is not None and rule.weight >= 0.4:
                weights[f"view.{view}"] = 0.3 if view == "leet" else 0.5
                for lb in extra:
                    labels[lb] = None
    zw, bidi, tags = invisible_counts(text) if invisible else (0, 0, 0)
    if bidi:
        weights["unicode.bidi"] = 0.2
        labels["hidden_unicode"] = None
    if tags and not (tags <= 8 and "\U0001f3f4" in text):   # subdivision flags use tags
        weights["unicode.tags"] = 0.3
        labels["hidden_unicode"] = None
    if zw >= 3:
        weights["unicode.zero_width"] = 0.1
        labels["hidden_unicode"] = None
