"""Measuring the screen on a labelled set: recall, false-positive rate and recall per
category. Shared by ``benchmarks/screening.py`` and the corpus tests (pure; the caller loads
the rows)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from closedpaw.screening.screen import screen

__all__ = ["Case", "Measurement", "measure"]


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    malicious: bool
    category: str
    lang: str = "en"


@dataclass
class Measurement:
    malicious: int = 0
    benign: int = 0
    caught: int = 0
    false_positives: int = 0
    per_category: dict[str, list[int]] = field(default_factory=dict)   # [caught, total]
    per_lang: dict[str, list[int]] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)
    wrongly_flagged: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.malicious if self.malicious else 0.0

    @property
    def fpr(self) -> float:
        return self.false_positives / self.benign if self.benign else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"malicious": self.malicious, "benign": self.benign, "caught": self.caught,
                "false_positives": self.false_positives, "recall": round(self.recall, 4),
                "fpr": round(self.fpr, 4),
                "per_category_recall": {k: {"caught": c, "total": t,
                                            "recall": round(c / t, 4)}
                                        for k, (c, t) in sorted(self.per_category.items())},
                "per_lang_recall": {k: {"caught": c, "total": t, "recall": round(c / t, 4)}
                                    for k, (c, t) in sorted(self.per_lang.items())},
                "missed": self.missed, "wrongly_flagged": self.wrongly_flagged}


def measure(cases: Iterable[Case]) -> Measurement:
    m = Measurement()
    for c in cases:
        flagged = screen(c.text).flagged
        if c.malicious:
            m.malicious += 1
            cat = m.per_category.setdefault(c.category, [0, 0])
            lang = m.per_lang.setdefault(c.lang, [0, 0])
            cat[1] += 1
            lang[1] += 1
            if flagged:
                m.caught += 1
                cat[0] += 1
                lang[0] += 1
            else:
                m.missed.append(c.id)
        else:
            m.benign += 1
            if flagged:
                m.false_positives += 1
                m.wrongly_flagged.append(c.id)
    return m


def half(cases: Iterable[Case], part: str) -> list[Case]:
    """A fixed split of a set by the SHA-256 of each row id: ``dev`` (even first byte) is
    the half whose misses may be looked at while writing rules; ``test`` is the half that is
    only ever measured (held out)."""
    import hashlib

    want = 0 if part == "dev" else 1
    return [c for c in cases if hashlib.sha256(c.id.encode()).digest()[0] % 2 == want]
