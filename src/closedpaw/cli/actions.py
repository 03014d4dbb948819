"""``closedpaw actions list | show | approve | reject``: over the HTTP API, through the public
:class:`closedpaw.client.Client`. An API refusal exits 1 with its stable code; no answer or a
bad token file exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from closedpaw.cli.util import (
    EXIT_REFUSED,
    Parser,
    client_from,
    client_options,
    die,
    printable,
)

if TYPE_CHECKING:
    from closedpaw.client import Client

__all__ = ["register"]



def register(sub: Any) -> None:
    a = sub.add_parser("actions", help="list, show, approve or reject actions (over the API)")
    a.set_defaults(handler=cmd_actions)
    asub = a.add_subparsers(dest="actions_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    al = asub.add_parser("list", help="list actions (default: pending ones)")
    al.add_argument("--all", action="store_true", help="every status, newest first")
    client_options(al)
    for name, helptext in (("show", "show one action, its canonical parameters and hash"),
                           ("approve", "approve an action by the hash of what you reviewed"),
                           ("reject", "reject a pending action")):
        ap = asub.add_parser(name, help=helptext)
        ap.add_argument("action_id")
        if name == "approve":
            ap.add_argument("--sha256", metavar="HASH", help="params_sha256 you reviewed; "
                            "without it the parameters are shown and you are asked to confirm")
        if name == "reject":
            ap.add_argument("--reason", default="", help="why (stored and audited)")
        client_options(ap)



def _row(a: dict[str, Any]) -> str:
    return printable(f"{a['action_id']}  {a['status']:<11} {a['security_level']:<8} "
                     f"{a['action_type']:<16} {a['requester']}")


def _block(label: str, text: str) -> str:
    """``label`` then ``text`` (which came from a sandbox or a requester), escaped, its
    lines indented under the label so none can pass for a line of ours."""
    return label + printable(text, keep_newlines=True).replace("\n", "\n" + " " * len(label))


def _show(a: dict[str, Any]) -> str:
    lines = [f"action        {a['action_id']}", f"type          {a['action_type']}",
             f"status        {a['status']}",
             "level         " + printable(f"{a['security_level']} ({a['level_reason']})"),
             "requester     " + printable(a['requester']),
             "parameters    " + printable(a['canonical_parameters']),
             f"params_sha256 {a['params_sha256']}"]
    if a.get("decided_by"):
        lines.append("decided by    " + printable(a['decided_by']))
    if a.get("error"):
        lines.append(_block("error         ", str(a['error'])))
    res = a.get("result")
    if res:
        if "exit_code" in res:
            lines.append(f"exit code     {res['exit_code']} (runtime "
                         f"{res.get('isolation', {}).get('runtime')})")
            lines.append(_block("stdout        ", res.get("stdout", "").rstrip("\n")))
            if res.get("stderr"):
                lines.append(_block("stderr        ", res["stderr"].rstrip("\n")))
        else:
            lines.append("result        " + json.dumps(res))
    return "\n".join(lines) + "\n"


def cmd_actions(args: argparse.Namespace) -> int:
    from closedpaw.errors import ApiRefused, ClientError

    with client_from(args) as c:
        try:
            return _actions(c, args)
        except ApiRefused as e:
            die(e, EXIT_REFUSED)
        except ClientError as e:
            die(e)


def _actions(c: Client, args: argparse.Namespace) -> int:
    sub = args.actions_command
    if sub == "list":
        data = {"actions": c.list_actions() if args.all else c.pending()}
        if args.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            for a in data["actions"]:
                sys.stdout.write(_row(a) + "\n")
        return 0
    aid = args.action_id
    if sub == "show":
        data = c.get_action(aid)
    elif sub == "reject":
        data = c.reject(aid, args.reason)
    else:
        sha = args.sha256
        if not sha:
            current = c.get_action(aid)
            sys.stdout.write(_show(current))
            if not sys.stdin.isatty():
                die("pass --sha256 HASH (the params_sha256 you reviewed) when not "
                     "interactive")
            sys.stdout.write("approve exactly these parameters? [y/N] ")
            sys.stdout.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                sys.stderr.write("closedpaw: not approved\n")
                return EXIT_REFUSED
            sha = current["params_sha256"]
        data = c.approve(aid, sha)
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else _show(data))
    return 0


