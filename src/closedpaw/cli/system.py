"""``closedpaw doctor | gc | demo``: the host's runtimes, leftovers and a guided demo."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from closedpaw.cli.util import die, output

__all__ = ["register"]


def register(sub: Any) -> None:
    d = sub.add_parser("doctor", help="show runtimes, their live probes, what is enforced, "
                       "images and the policy file")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--fresh", action="store_true", help="re-probe instead of using the cache")
    d.set_defaults(handler=cmd_doctor)

    g = sub.add_parser("gc", help="remove sandboxes left behind by a process that died",
                       description="Find containers, cgroups, mounts and state directories "
                       "of sandboxes whose owning process is gone, and remove them. Sandboxes "
                       "of living processes are left alone. Exit 1 if anything could not be "
                       "removed.")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.set_defaults(handler=cmd_gc)

    demo = sub.add_parser("demo", help="run Python, node and shell snippets in the sandbox and "
                          "show what protected them")
    demo.set_defaults(handler=cmd_demo)


def cmd_doctor(args: argparse.Namespace) -> int:
    from closedpaw.sandbox.doctor import diagnose, render

    report = diagnose(fresh=args.fresh)
    output(report, args.json, render)
    return 0 if report["usable"] else 1


def cmd_gc(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox import SandboxManager

    try:
        report = SandboxManager().gc()
    except ClosedPawError as e:
        die(e)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        for line in report.details:
            sys.stdout.write(f"found {line}\n")
        for line in report.deferred:
            sys.stdout.write(f"left alone for now {line}\n")
        sys.stdout.write(f"removed {len(report.removed)} sandbox(es), left "
                         f"{len(report.live)} live one(s) alone\n")
        for err in report.errors:
            sys.stderr.write(f"closedpaw: could not remove {err}\n")
    return 1 if report.errors else 0


def cmd_demo(_: argparse.Namespace) -> int:
    from closedpaw.cli.demo import main as demo_main

    return demo_main()
