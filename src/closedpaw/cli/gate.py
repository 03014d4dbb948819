"""``closedpaw serve | token | actions | audit``: the gate's commands. Wired into
``cli/main.py`` by :func:`register`; every heavy import stays inside the handlers so that
``closedpaw run`` never pays for them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["HANDLERS", "register"]

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _die(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"closedpaw: error: {' '.join(str(message).split())}\n")
    raise SystemExit(code)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="ClosedPaw data directory (default: CLOSEDPAW_DATA_DIR or "
                   "/var/lib/closedpaw)")


def _client_opts(p: argparse.ArgumentParser) -> None:
    _data_dir(p)
    p.add_argument("--url", help="API base URL (default: CLOSEDPAW_API_URL or "
                   "http://127.0.0.1:8765)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the bearer token (default: CLOSEDPAW_API_TOKEN, else "
                   "DATA_DIR/api-token)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP API (the gate) on loopback",
                       description="Serve the authenticated HTTP API. On first start an admin "
                       "token is written to DATA_DIR/api-token (mode 0600).")
    s.add_argument("--host", help="address to bind (default 127.0.0.1; loopback only unless "
                   "--allow-remote)")
    s.add_argument("--port", type=int, help="port (default 8765)")
    _data_dir(s)
    s.add_argument("--allow-remote", action="store_true",
                   help="allow binding a non-loopback address")

    t = sub.add_parser("token", help="manage API tokens (local, on the data directory)")
    tsub = t.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    tc = tsub.add_parser("create", help="create a principal and print its token once")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True, choices=("admin", "user"))
    _data_dir(tc)
    tr = tsub.add_parser("revoke", help="disable a principal; its token stops working")
    tr.add_argument("--name", required=True)
    _data_dir(tr)
    tl = tsub.add_parser("list", help="list principals (never their tokens)")
    _data_dir(tl)

    a = sub.add_parser("actions", help="list, show, approve or reject actions (over the API)")
    asub = a.add_subparsers(dest="actions_command", metavar="COMMAND", required=True)
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

    au = sub.add_parser("audit", help="verify or export the audit log (local)")
    ausub = au.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    av = ausub.add_parser("verify", help="check the hash chain; exit 0 intact, 1 broken")
    _data_dir(av)
    av.add_argument("--json", action="store_true", help="print JSON")
    ae = ausub.add_parser("export", help="write the log as JSONL")
    _data_dir(ae)
    ae.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")


def _settings(args: argparse.Namespace, **more: Any) -> Any:
    from closedpaw.errors import ConfigError
    from closedpaw.settings import Settings

    try:
        s = Settings.from_env()
        changes = {k: v for k, v in more.items() if v is not None}
        if getattr(args, "data_dir", None) is not None:
            changes["data_dir"] = args.data_dir.absolute()
        return s.with_(**changes) if changes else s
    except ConfigError as e:
        _die(str(e))


# -- serve / token ---------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from closedpaw.api.server import serve
    from closedpaw.errors import ClosedPawError

    settings = _settings(args, api_host=args.host, api_port=args.port)
    try:
        serve(settings, allow_remote=args.allow_remote)
    except ClosedPawError as e:
        _die(str(e))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import getpass

    from closedpaw.errors import ClosedPawError
    from closedpaw.gate.engine import Gate
    from closedpaw.security.principal import Principal

    settings = _settings(args)
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
        _die(str(e), EXIT_REFUSED)
    return 0


# -- actions (HTTP client) -----------------------------------------------------------------
class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        settings = _settings(args, api_url=args.url)
        self.base = settings.api_base_url
        token = settings.api.api_token
        path = args.token_file or (None if token else settings.token_file)
        if path is not None:
            try:
                token = Path(path).read_text().strip()
            except OSError as e:
                _die(f"cannot read the token from {path}: {e.strerror}; pass --token-file or "
                     "set CLOSEDPAW_API_TOKEN")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            r = httpx.request(method, self.base + path, json=body, timeout=30,
                              headers={"Authorization": f"Bearer {self.token}"},
                              trust_env=False)
        except httpx.HTTPError as e:
            _die(f"cannot reach the API at {self.base}: {e} (is 'closedpaw serve' running?)")
        try:
            data = r.json()
        except ValueError:
            _die(f"the API answered {r.status_code} with something that is not JSON")
        if r.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            _die(f"{err.get('code', r.status_code)}: {err.get('message', r.text[:200])}",
                 EXIT_REFUSED)
        return data


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
    c = _Client(args)
    sub = args.actions_command
    if sub == "list":
        data = c.call("GET", "/api/actions" if args.all else "/api/actions/pending")
        if args.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            for a in data["actions"]:
                sys.stdout.write(_row(a) + "\n")
        return 0
    aid = args.action_id
    if sub == "show":
        data = c.call("GET", f"/api/actions/{aid}")
    elif sub == "reject":
        data = c.call("POST", f"/api/actions/{aid}/reject", {"reason": args.reason})
    else:
        sha = args.sha256
        if not sha:
            current = c.call("GET", f"/api/actions/{aid}")
            sys.stdout.write(_show(current))
            if not sys.stdin.isatty():
                _die("pass --sha256 HASH (the params_sha256 you reviewed) when not "
                     "interactive")
            sys.stdout.write("approve exactly these parameters? [y/N] ")
            sys.stdout.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                sys.stderr.write("closedpaw: not approved\n")
                return EXIT_REFUSED
            sha = current["params_sha256"]
        data = c.call("POST", f"/api/actions/{aid}/approve", {"params_sha256": sha})
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else _show(data))
    return 0


# -- audit (local) ---------------------------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    from closedpaw.audit import AuditLog
    from closedpaw.errors import ClosedPawError

    settings = _settings(args)
    if not settings.audit_dir.is_dir():
        _die(f"no audit log in {settings.audit_dir}; pass --data-dir DIR")
    try:
        log = AuditLog(settings.audit_dir, create=False)
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
        _die(str(e))
    except OSError as e:
        _die(f"{e.filename}: {e.strerror}")
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        sys.stdout.write(f"audit chain intact: {report.entries} entries\n")
    else:
        sys.stdout.write(f"audit chain BROKEN at seq {report.first_bad_seq}: "
                         f"{report.problem}\n")
    return 0 if report.ok else 1


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve, "token": cmd_token, "actions": cmd_actions, "audit": cmd_audit}
