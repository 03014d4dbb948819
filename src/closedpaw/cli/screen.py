"""``closedpaw screen [--json] [FILE]``: screen a file (or stdin) for prompt injection and
print the verdict. Exit 0 whether or not it is flagged (a signal, not a block); 2 when the
input cannot be read."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("screen", help="screen text for prompt injection (a signal; exit 0)",
                       description="Normalise and decode the text of FILE (default: stdin), "
                       "run the injection detectors and print the verdict: flagged, score, "
                       "labels and the matching spans.")
    p.add_argument("file", metavar="FILE", nargs="?", type=Path, help="default: stdin")
    p.add_argument("--json", action="store_true", help='print {"flagged", "score", '
                   '"labels", "spans"} as JSON')
    p.set_defaults(handler=cmd_screen)


def cmd_screen(args: argparse.Namespace) -> int:
    try:
        data = (args.file.read_bytes() if args.file is not None
                else sys.stdin.buffer.read())
    except OSError as e:
        sys.stderr.write(f"closedpaw: error: cannot read {args.file}: {e.strerror}\n")
        return 2
    from closedpaw.screening import screen

    verdict = screen(data.decode("utf-8", "replace")).to_dict()
    if args.json:
        sys.stdout.write(json.dumps(verdict) + "\n")
        return 0
    if not verdict["flagged"]:
        sys.stdout.write(f"not flagged (score {verdict['score']:.2f})\n")
        return 0
    sys.stdout.write(f"FLAGGED (score {verdict['score']:.2f}): "
                     f"{', '.join(verdict['labels'])}\n")
    for s in verdict["spans"]:
        sys.stdout.write(f"  {s['label']:<22} {s['view']:<8} {s['excerpt']!r}\n")
    return 0

