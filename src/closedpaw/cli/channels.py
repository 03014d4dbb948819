"""``closedpaw channels``: the chat channels of a running server, over the HTTP API (admin
token): ``list``, ``status``, ``pair list``, ``pair approve CODE``, ``pair revoke USER``.
Registered by :func:`register`; httpx is imported inside the handlers only."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from closedpaw.cli.util import EXIT_REFUSED, Parser, client_from, client_options, die, printable

__all__ = ["register"]


def register(sub: Any) -> None:
    c = sub.add_parser("channels", help="chat channels: status and pairing (over the API)",
                       description="The Telegram/Slack/Discord/Matrix channels 'closedpaw "
                       "serve' runs (configured in CLOSEDPAW_CHANNELS_FILE; see "
                       "docs/channels.md). Needs an admin token.")
    c.set_defaults(handler=cmd_channels)
    csub = c.add_subparsers(dest="channels_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    client_options(csub.add_parser("list", help="configured channels and whether they run"))
    client_options(csub.add_parser("status", help="each channel in detail (exit 1 when an "
                                   "enabled one is not running)"))
    pair = csub.add_parser("pair", help="pairing requests: list, approve, revoke")
    psub = pair.add_subparsers(dest="pair_command", metavar="COMMAND", required=True,
                               parser_class=Parser)
    client_options(psub.add_parser("list", help="pending requests and paired users"))
    pa = psub.add_parser("approve", help="approve a pairing code: its person becomes a new "
                         "principal with the 'user' role (never more)")
    pa.add_argument("code", help="the 8-character code the person was given")
    client_options(pa)
    pr = psub.add_parser("revoke", help="unpair a user and disable its principal")
    pr.add_argument("user", help="the user's immutable id (Slack: TEAM/USER)")
    pr.add_argument("--channel", required=True, help="the channel's name")
    client_options(pr)


def _ago(t: float) -> str:
    d = time.time() - float(t)
    return f"{int(d // 60)} min ago" if d >= 0 else f"in {int(-d // 60)} min"


def cmd_channels(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClientError

    try:
        with client_from(args) as client:
            return _run(client, args)
    except ClientError as e:
        die(e, EXIT_REFUSED)


def _out(data: Any, args: argparse.Namespace) -> bool:
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    return bool(args.json)


def _run(client: Any, args: argparse.Namespace) -> int:
    cmd = args.channels_command
    if cmd in ("list", "status"):
        chans = client.channels()
        if not _out(chans, args):
            if not chans:
                sys.stdout.write("no channels configured (CLOSEDPAW_CHANNELS_FILE)\n")
            for c in chans:
                state = "running" if c.get("running") else (
                    "disabled" if not c.get("enabled") else f"DOWN: {c.get('error')}")
                sys.stdout.write(printable(f"{c['name']:<12} {c['type']:<9} {state}") + "\n")
                if cmd == "status":
                    for k in ("token", "allowlisted", "paired", "pending_pairings", "pairing",
                              "bot", "team", "request_url", "cards_open"):
                        if k in c and c[k] not in (None, ""):
                            sys.stdout.write(printable(f"  {k:<17} {c[k]}") + "\n")
        if cmd == "status":
            return 0 if all(c.get("running") or not c.get("enabled") for c in chans) \
                else EXIT_REFUSED
        return 0
    if args.pair_command == "list":
        p = client.pairings()
        if not _out(p, args):
            sys.stdout.write("pending (codes are shown only to the person who asked):\n")
            for r in p["pending"] or []:
                sys.stdout.write(printable(
                    f"  {r['channel']:<10} {r['user']:<24} {r['display_name'][:30]!r} "
                    f"asked {_ago(r['created_at'])}, expires {_ago(r['expires_at'])}") + "\n")
            sys.stdout.write("paired:\n")
            for u in p["paired"] or []:
                sys.stdout.write(printable(
                    f"  {u['channel']:<10} {u['user']:<24} as {u['principal']} (by "
                    f"{u['paired_by']})") + "\n")
        return 0
    if args.pair_command == "approve":
        u = client.approve_pairing(args.code)
        if not _out(u, args):
            sys.stdout.write(printable(f"paired {u['user']} on {u['channel']} as principal "
                                       f"{u['principal']} (role user)") + "\n")
        return 0
    u = client.revoke_channel_user(args.channel, args.user)
    if not _out(u, args):
        sys.stdout.write(printable(f"revoked {u['user']} on {u['channel']}; principal "
                                   f"{u['principal']} disabled") + "\n")
    return 0
