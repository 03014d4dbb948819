"""``closedpaw skill install PATH | list | show NAME | rm NAME | run NAME -- ARGS-as-JSON``.

``install`` checks and hashes the package here, then submits the install to the gate (over
the API) showing its declared capabilities: an approver runs ``closedpaw actions approve``.
``run`` submits a ``skill_execution`` action and waits (bounded) for its result. ``list``,
``show`` and ``rm`` work on the data directory (root), like ``closedpaw token``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from closedpaw.cli.actions import _show
from closedpaw.cli.util import (
    EXIT_REFUSED,
    Parser,
    client_from,
    client_options,
    data_dir_option,
    die,
    settings_from,
)

__all__ = ["register"]


def register(sub: Any) -> None:
    s = sub.add_parser("skill", help="install, list, show, remove or run skills")
    s.set_defaults(handler=cmd_skill)
    ssub = s.add_subparsers(dest="skill_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    i = ssub.add_parser("install", help="check a skill package (directory or tarball) and "
                        "submit its install for approval (over the API)")
    i.add_argument("path", type=Path)
    client_options(i)
    ls = ssub.add_parser("list", help="built-in and installed skills")
    data_dir_option(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    sh = ssub.add_parser("show", help="a skill's manifest, capabilities and pinned hash")
    sh.add_argument("name")
    sh.add_argument("--verify", action="store_true", help="rehash its files against the pin")
    data_dir_option(sh)
    sh.add_argument("--json", action="store_true", help="print JSON")
    rm = ssub.add_parser("rm", help="remove an installed skill (audited)")
    rm.add_argument("name")
    data_dir_option(rm)
    r = ssub.add_parser("run", help="run a skill through the gate: run NAME -- '{\"k\": 1}'")
    r.add_argument("name")
    r.add_argument("arguments", nargs="?", default="{}", help="the arguments as a JSON object")
    r.add_argument("--wait", type=float, default=120.0, metavar="S",
                   help="seconds to wait for the result (default 120); a pending action is "
                   "reported at once")
    client_options(r)


def _service(args: argparse.Namespace) -> Any:
    from closedpaw.skills import SkillService

    settings = settings_from(args)

    def no_sandboxes() -> Any:
        die("this command does not run sandboxes")
    return SkillService(settings, sandboxes=no_sandboxes)


def _render(d: dict[str, Any]) -> str:
    lines = [f"name          {d['name']}" + ("  (built-in)" if d.get("builtin") else "")]
    for k in ("version", "description", "sha256", "source", "entry", "roots"):
        if k in d:
            lines.append(f"{k:<13} {d[k] if not isinstance(d[k], list) else json.dumps(d[k])}")
    if "capabilities" in d:
        lines.append(f"capabilities  {json.dumps(d['capabilities'])}")
    lines.append(f"inputs        {json.dumps(d.get('inputs', {}))}")
    return "\n".join(lines) + "\n"


def cmd_skill(args: argparse.Namespace) -> int:
    from closedpaw.errors import ApiRefused, ClientError, ClosedPawError

    sub = args.skill_command
    try:
        if sub == "list":
            items = _service(args).list()
            if args.json:
                sys.stdout.write(json.dumps({"skills": items}, indent=2) + "\n")
            for d in [] if args.json else items:
                tag = "built-in" if d.get("builtin") else d.get("version", "?")
                sys.stdout.write(f"{d['name']:<20} {tag:<10} {d.get('description', '')}\n")
            return 0
        if sub == "show":
            svc = _service(args)
            d = svc.show(args.name)
            if args.verify and not d.get("builtin"):
                svc.store.get(args.name, verify=True)
                d["verified"] = True
            sys.stdout.write(json.dumps(d, indent=2) + "\n" if args.json else _render(d))
            return 0
        if sub == "rm":
            from closedpaw.audit import AuditEvent, AuditLog

            svc = _service(args)
            svc.remove(args.name)
            AuditLog(svc.settings.audit_dir).append(AuditEvent.SKILL_REMOVED,
                                                    principal="local",
                                                    details={"skill": args.name})
            sys.stdout.write(f"removed skill {args.name}\n")
            return 0
        with client_from(args) as c:
            try:
                if sub == "install":
                    params = _service(args).install_request(args.path.absolute())
                    rec = c.get_action(c.submit("skill_execution", params)["action_id"])
                else:
                    try:
                        arguments = json.loads(args.arguments)
                    except ValueError as e:
                        die(f"arguments: not JSON ({e})")
                    if not isinstance(arguments, dict):
                        die("arguments: must be a JSON object")
                    rec = c.get_action(c.submit("skill_execution", {
                        "skill": args.name, "arguments": arguments})["action_id"])
                    deadline = time.monotonic() + args.wait
                    while rec["status"] in ("approved", "executing") \
                            and time.monotonic() < deadline:
                        time.sleep(0.1)
                        rec = c.get_action(rec["action_id"])
            except ApiRefused as e:
                die(e, EXIT_REFUSED)
            except ClientError as e:
                die(e)
        sys.stdout.write(json.dumps(rec, indent=2) + "\n" if args.json else _show(rec))
        if rec["status"] == "pending":
            sys.stdout.write(f"pending approval: closedpaw actions approve {rec['action_id']} "
                             f"--sha256 {rec['params_sha256']}\n")
            return 0
        return 0 if rec["status"] == "completed" else EXIT_REFUSED
    except ClosedPawError as e:
        die(e, EXIT_REFUSED)
