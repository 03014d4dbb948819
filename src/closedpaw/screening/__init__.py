"""Prompt-injection screening (layer L2: imports only ``errors`` and ``settings``): pure and
fast rules over normalised and decoded views of a text. The result is a signal (flagged,
score, labels, spans) that marks content untrusted and raises risk; it never blocks."""

from closedpaw.screening.normalize import views
from closedpaw.screening.rules import LABELS, prepare
from closedpaw.screening.screen import ScreenResult, Span, screen

__all__ = ["LABELS", "ScreenResult", "Span", "prepare", "screen", "views"]
