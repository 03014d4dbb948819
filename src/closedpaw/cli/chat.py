"""``closedpaw chat`` and ``closedpaw providers``: the assistant over the HTTP API, through
:class:`closedpaw.client.Client`. Registered by :func:`register` (``cli/main.py`` lists this
module); httpx is imported inside the handlers only.

``chat -m TEXT`` runs one turn and exits 0 when it finished, 3 when it paused for an approval
(the action id and hash are printed; ``closedpaw actions approve`` resumes it), 1 on an error.
With ``--json`` it prints the turn's events as JSON lines, the API's SSE events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from closedpaw.cli.util import EXIT_REFUSED, Parser, client_from, client_options, die

if TYPE_CHECKING:
    from closedpaw.client import Client

__all__ = ["register"]

EXIT_PAUSED = 3
EXIT_FAILED = EXIT_REFUSED



def register(sub: Any) -> None:
    c = sub.add_parser("chat", help="talk to the assistant (tool calls go through the gate)",
                       description="Chat with the assistant. Each tool call the model makes "
                       "is a gate action: its level is shown; high ones ask you to approve the "
                       "exact parameters. Ctrl-C cancels the running turn.")
    c.set_defaults(handler=cmd_chat)
    c.add_argument("-m", "--message", metavar="TEXT", help="run one turn and exit (0 "
                   "finished, 3 paused for an approval)")
    c.add_argument("--provider", metavar="P", help="provider for a new conversation")
    c.add_argument("--model", metavar="M", help="model for a new conversation")
    c.add_argument("--conversation", metavar="ID", help="continue this conversation")
    client_options(c)

    p = sub.add_parser("providers", help="list or test the model providers (over the API)")
    p.set_defaults(handler=cmd_providers)
    psub = p.add_subparsers(dest="providers_command", metavar="COMMAND", required=True,
                            parser_class=Parser)
    client_options(psub.add_parser("list", help="providers, local or cloud, health, models"))
    pt = psub.add_parser("test", help="check that providers answer; exit 1 if one does not")
    pt.add_argument("name", nargs="?", help="only this provider")
    client_options(pt)



def _conversation(client: Client, args: argparse.Namespace) -> str:
    if args.conversation:
        return str(args.conversation)
    conv: str = client.create_conversation(provider=args.provider,
                                           model=args.model)["conversation_id"]
    return conv


def _show(events: Iterable[tuple[str, dict[str, Any]]], *, as_json: bool
          ) -> tuple[str, dict[str, Any]]:
    """Print a turn's events as they come; returns the last (final, error or
    approval_required)."""
    last: tuple[str, dict[str, Any]] = ("error", {"code": "no_answer", "message": "no event"})
    streamed = False
    for name, data in events:
        last = (name, data)
        if as_json:
            sys.stdout.write(json.dumps({"event": name, **data}) + "\n")
            sys.stdout.flush()
            continue
        if name == "token":
            sys.stdout.write(data["text"])
            sys.stdout.flush()
            streamed = True
        elif name == "tool_call":
            if streamed:
                sys.stdout.write("\n")
                streamed = False
            sys.stderr.write(f"  -> {data['name']} [{data.get('level') or 'refused'}] "
                             f"{json.dumps(data['arguments'])[:300]}"
                             f"{'  action ' + data['action_id'] if data.get('action_id') else ''}"
                             "\n")
        elif name == "tool_result":
            sys.stderr.write(f"  <- {data['status']}: {data['content'][:300]}\n")
        elif name == "final":
            if not streamed:
                sys.stdout.write(data["text"])
            sys.stdout.write("\n")
            if data.get("stop_reason"):
                sys.stderr.write(f"closedpaw: stopped: {data['stop_reason']}\n")
        elif name == "error":
            sys.stderr.write(f"closedpaw: error: {data.get('code')}: {data.get('message')}\n")
        elif name == "approval_required":
            sys.stderr.write(f"closedpaw: approval required for action {data['action_id']}\n"
                             f"  parameters    {data.get('canonical_parameters', '')}\n"
                             f"  params_sha256 {data['params_sha256']}\n")
        if name in ("final", "error", "approval_required"):
            break
    if not as_json:
        sys.stdout.flush()
    return last


def cmd_chat(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClientError

    try:
        with client_from(args) as client:
            return _chat(client, args)
    except ClientError as e:
        die(e, EXIT_FAILED)


def _chat(client: Client, args: argparse.Namespace) -> int:
    conv = _conversation(client, args)
    if args.message is not None:
        name, data = _show(client.send(conv, args.message), as_json=args.json)
        if name == "approval_required":
            if not args.json:
                sys.stderr.write(f"closedpaw: the turn waits; approve with 'closedpaw actions "
                                 f"approve {data['action_id']} --sha256 "
                                 f"{data['params_sha256']}' (conversation {conv})\n")
            return EXIT_PAUSED
        return 0 if name == "final" else EXIT_FAILED
    sys.stderr.write(f"closedpaw: conversation {conv}; Ctrl-D ends, Ctrl-C cancels a turn\n")
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            sys.stderr.write("\n")
            return 0
        if not text.strip():
            continue
        try:
            name, data = _show(client.send(conv, text), as_json=args.json)
            while name == "approval_required":
                answer = input("approve these exact parameters? [y/N] ").strip().lower()
                aid = data["action_id"]
                # subscribe first, then decide: the resumed turn's events cannot be missed
                with client.conversation_events(conv) as events:
                    if answer == "y":
                        client.approve(aid, data["params_sha256"])
                    else:
                        client.reject(aid, "declined in closedpaw chat")
                    name, data = _show(events, as_json=args.json)
        except KeyboardInterrupt:
            client.cancel_turn(conv)
            sys.stderr.write("\nclosedpaw: turn cancelled\n")


def cmd_providers(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClientError

    try:
        with client_from(args) as client:
            provs = client.providers()
    except ClientError as e:
        die(e, EXIT_FAILED)
    if args.providers_command == "test" and args.name:
        provs = [p for p in provs if p["name"] == args.name]
        if not provs:
            die(f"no provider named {args.name!r}", EXIT_FAILED)
    if args.json:
        sys.stdout.write(json.dumps(provs, indent=2) + "\n")
    else:
        for p in provs:
            state = "ok" if p["healthy"] else "DOWN"
            sys.stdout.write(f"{p['name']:<14} {p['type']:<10} {p['locality']:<6} {state:<5} "
                             f"{', '.join(p['models'][:5]) or '-'}  ({p['detail']})\n")
    if args.providers_command == "test":
        return 0 if all(p["healthy"] for p in provs) else EXIT_FAILED
    return 0
