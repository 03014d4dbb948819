"""``closedpaw serve | token | audit``: the gate's local commands (on the data directory).
Every heavy import stays inside the handlers so that ``closedpaw run`` never pays for them;
``closedpaw actions`` (over the API) is in ``cli/actions.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from closedpaw.cli.util import (
    EXIT_REFUSED,
    ROLE_CHOICES,
    Parser,
    die,
    settings_from,
)
from closedpaw.cli.util import data_dir_option as _data_dir

__all__ = ["register"]


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP API (the gate) and the web UI on loopback",
                       description="Serve the authenticated HTTP API, and the web UI at /. On "
                       "first start an admin token is written to DATA_DIR/api-token (mode "
                       "0600); each start prints a one-time login link for the browser.")
    s.add_argument("--host", help="address to bind (default 127.0.0.1; loopback only unless "
                   "--allow-remote)")
    s.add_argument("--port", type=int, help="port (default 8765)")
    _data_dir(s)
    s.add_argument("--allow-remote", action="store_true",
                   help="allow binding a non-loopback address")
    s.set_defaults(handler=cmd_serve)

    t = sub.add_parser("token", help="manage API tokens (local, on the data directory)")
    t.set_defaults(handler=cmd_token)
    tsub = t.add_subparsers(dest="token_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    tc = tsub.add_parser("create", help="create a principal and print its token once")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True, choices=ROLE_CHOICES)
    _data_dir(tc)
    tr = tsub.add_parser("revoke", help="disable a principal; its token stops working")
    tr.add_argument("--name", required=True)
    _data_dir(tr)
    tl = tsub.add_parser("list", help="list principals (never their tokens)")
    _data_dir(tl)

    au = sub.add_parser("audit", help="verify or export the audit log (local)")
    au.set_defaults(handler=cmd_audit)
    ausub = au.add_subparsers(dest="audit_command", metavar="COMMAND", required=True,
                              parser_class=Parser)
    av = ausub.add_parser("verify", help="check the hash chain; exit 0 intact, 1 broken")
    _data_dir(av)
    av.add_argument("--json", action="store_true", help="print JSON")
    ar = ausub.add_parser("repair", help="move a torn last entry aside (audited) so the "
                          "server can start; complete entries are never dropped")
    _data_dir(ar)
    ae = ausub.add_parser("export", help="write the log as JSONL")
    _data_dir(ae)
    ae.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")


# -- serve / token ---------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from closedpaw.api.server import serve
    from closedpaw.errors import ClosedPawError

    settings = settings_from(args, api_host=args.host, api_port=args.port)
    try:
        serve(settings, allow_remote=args.allow_remote)
    except ClosedPawError as e:
        die(e)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import getpass

    from closedpaw.errors import ClosedPawError
    from closedpaw.gate.engine import Gate
    from closedpaw.security.principal import Principal

    settings = settings_from(args)
    by = Principal(f"local:{getpass.getuser()}", "admin")
    try:
        orch = Gate(settings, workers=1)
        try:
            if args.token_command == "create":
                token = orch.create_principal(args.name, args.role, by=by)
                sys.stdout.write(token + "\n")
                sys.stderr.write(f"closedpaw: created {args.role} {args.name!r}; the token is "
                                 "shown once\n")
            elif args.token_command == "revoke":
                orch.revoke_principal(args.name, by=by)
                sys.stderr.write(f"closedpaw: revoked {args.name!r}\n")
            else:
                for name, role, created, disabled in orch.store.principals():
                    import datetime as dt

                    when = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M")
                    sys.stdout.write(f"{name:<24} {role:<6} {when}Z"
                                     f"{'  revoked' if disabled else ''}\n")
        finally:
            orch.close()
    except ClosedPawError as e:
        die(e, EXIT_REFUSED)
    return 0


# -- audit (local) ---------------------------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    from closedpaw.audit import AuditLog
    from closedpaw.errors import ClosedPawError

    settings = settings_from(args)
    if not settings.audit_dir.is_dir():
        die(f"no audit log in {settings.audit_dir}; pass --data-dir DIR")
    try:
        log = AuditLog(settings.audit_dir, create=False)
        db_file = (Path(settings.database_url.split("///", 1)[1])
                   if settings.database_url.startswith("sqlite:///") else None)
        if args.audit_command in ("verify", "repair") and (db_file is None
                                                           or db_file.exists()):
            # the database anchors the latest seq and hash: a cut or rolled-back log shows
            # (no database file: nothing to compare with, and none is made)
            from closedpaw.gate.store import Store

            log.anchor = Store(settings.database_url)
        if args.audit_command == "repair":
            done = log.repair()
            sys.stdout.write("audit log tail is whole; nothing to repair\n" if done is None
                             else f"moved a torn tail of {done['torn_bytes']} bytes to "
                             f"{settings.audit_dir / done['moved_to']} (audited)\n")
            return 0
        if args.audit_command == "export":
            if args.output is None:
                log.export(sys.stdout)
            else:
                with open(args.output, "w") as f:
                    n = log.export(f)
                sys.stderr.write(f"closedpaw: wrote {n} entries to {args.output}\n")
            return 0
        report = log.verify()
    except ClosedPawError as e:
        die(e)
    except OSError as e:
        die(f"{e.filename}: {e.strerror}")
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        sys.stdout.write(f"audit chain intact: {report.entries} entries\n")
    else:
        sys.stdout.write(f"audit chain BROKEN at seq {report.first_bad_seq}: "
                         f"{report.problem}\n")
    return 0 if report.ok else 1
