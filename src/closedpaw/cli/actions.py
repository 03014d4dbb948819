"""``closedpaw actions list | show | approve | reject``: over the HTTP API, through the public
:class:`closedpaw.client.Client`. An API refusal exits 1 with its stable code; no answer or a
bad token file exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedpaw.cli.util import EXIT_REFUSED, Parser, data_dir_option, die, settings_from

if TYPE_CHECKING:
    from closedpaw.client import Client

__all__ = ["register"]


def _client_opts(p: argparse.ArgumentParser) -> None:
    data_dir_option(p)
    p.add_argument("--url", help="API base URL (default: CLOSEDPAW_API_URL or "
                   "http://127.0.0.1:8765)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the bearer token (default: CLOSEDPAW_API_TOKEN, else "
                   "DATA_DIR/api-token)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    a = sub.add_parser("actions", help="list, show, approve or reject actions (over the API)")
    a.set_defaults(handler=cmd_actions)
    asub = a.add_subparsers(dest="actions_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    al = asub.add_parser("list", help="list actions (default: pending ones)")
    al.add_argument("--all", action="store_true", help="every status, newest first")
    _client_opts(al)
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
        _client_opts(ap)


def _client(args: argparse.Namespace) -> Client:
    from closedpaw.client import Client
    from closedpaw.errors import ConfigError

    try:
        return Client(settings=settings_from(args, api_url=args.url),
                      token_file=args.token_file)
    except ConfigError as e:
        die(e)


def _row(a: dict[str, Any]) -> str:
    return (f"{a['action_id']}  {a['status']:<11} {a['security_level']:<8} "
            f"{a['action_type']:<16} {a['requester']}")


def _show(a: dict[str, Any]) -> str:
    lines = [f"action        {a['action_id']}", f"type          {a['action_type']}",
             f"status        {a['status']}",
             f"level         {a['security_level']} ({a['level_reason']})",
             f"requester     {a['requester']}",
             f"parameters    {a['canonical_parameters']}",
             f"params_sha256 {a['params_sha256']}"]
    if a.get("decided_by"):
        lines.append(f"decided by    {a['decided_by']}")
    if a.get("error"):
        lines.append(f"error         {a['error']}")
    res = a.get("result")
    if res:
        if "exit_code" in res:
            lines.append(f"exit code     {res['exit_code']} (runtime "
                         f"{res.get('isolation', {}).get('runtime')})")
            lines.append("stdout        " + res.get("stdout", "").rstrip("\n"))
            if res.get("stderr"):
                lines.append("stderr        " + res["stderr"].rstrip("\n"))
        else:
            lines.append("result        " + json.dumps(res))
    return "\n".join(lines) + "\n"


def cmd_actions(args: argparse.Namespace) -> int:
    from closedpaw.errors import ApiRefused, ClientError

    with _client(args) as c:
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


