"""``closedpaw policy list | show``: the execution policies (built-in and the user file)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from closedpaw.cli.util import Parser, die, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    pol = sub.add_parser("policy", help="list and show execution policies")
    psub = pol.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=Parser,
                              required=True)
    pl = psub.add_parser("list", help="list the policies (built-in and from the user file)")
    pl.add_argument("--json", action="store_true", help="print JSON")
    ps = psub.add_parser("show", help="show one policy, resolved")
    ps.add_argument("name", metavar="NAME")
    ps.add_argument("--json", action="store_true", help="print JSON")
    pol.set_defaults(handler=cmd_policy)


def cmd_policy(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox.policy import load_policies

    try:
        pols = load_policies(settings_from(args).sandbox.policy_file)
        if args.policy_command == "list":
            rows = [pols.get(n).to_dict() for n in pols.names()]
            if args.json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
                return 0
            from rich.console import Console
            from rich.table import Table

            t = Table("policy", "image", "memory", "cpus", "pids", "root", "timeout",
                      "description", box=None)
            for r in rows:
                t.add_row(r["name"], r["image"], f"{r['memory_mb']} MiB", f"{r['cpus']:g}",
                          str(r["pids"]), "ro" if r["readonly_root"] or r["image"] == "host"
                          else "overlay rw", f"{r['timeout_s']:g} s", r["description"])
            Console(width=160).print(t)
            return 0
        d = pols.get(args.name).to_dict()
    except ClosedPawError as e:
        die(e)
    if args.json:
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(d, sort_keys=False))
    return 0
