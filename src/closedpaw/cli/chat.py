"""``closedpaw chat`` and ``closedpaw providers``: the assistant over the HTTP API. Wired into
``cli/main.py`` by :func:`register`; httpx is imported inside the handlers only.

``chat -m TEXT`` runs one turn and exits 0 when it finished, 3 when it paused for an approval
(the action id and hash are printed; ``closedpaw actions approve`` resumes it), 1 on an error.
With ``--json`` it prints the turn's events as JSON lines, the API's SSE events.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from closedpaw.cli.gate import _Client, _client_opts, _die

__all__ = ["HANDLERS", "register"]

EXIT_PAUSED = 3
EXIT_FAILED = 1


def register(sub: Any) -> None:
    c = sub.add_parser("chat", help="talk to the assistant (tool calls go through the gate)",
                       description="Chat with the assistant. Each tool call the model makes "
                       "is a gate action: its level is shown; high ones ask you to approve the "
                       "exact parameters. Ctrl-C cancels the running turn.")
    c.add_argument("-m", "--message", metavar="TEXT", help="run one turn and exit (0 "
                   "finished, 3 paused for an approval)")
    c.add_argument("--provider", metavar="P", help="provider for a new conversation")
    c.add_argument("--model", metavar="M", help="model for a new conversation")
    c.add_argument("--conversation", metavar="ID", help="continue this conversation")
    _client_opts(c)

    p = sub.add_parser("providers", help="list or test the model providers (over the API)")
    psub = p.add_subparsers(dest="providers_command", metavar="COMMAND", required=True)
    _client_opts(psub.add_parser("list", help="providers, local or cloud, health, models"))
    pt = psub.add_parser("test", help="check that providers answer; exit 1 if one does not")
    pt.add_argument("name", nargs="?", help="only this provider")
    _client_opts(pt)


def _events(client: _Client, conv: str, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import httpx

    try:
        with httpx.stream("POST", f"{client.base}/api/conversations/{conv}/messages",
                          json={"content": text}, timeout=httpx.Timeout(30, read=None),
                          headers={"Authorization": f"Bearer {client.token}"},
                          trust_env=False) as r:
            if r.status_code >= 400:
                r.read()
                try:
                    err = r.json().get("error", {})
                except ValueError:
                    err = {}
                _die(f"{err.get('code', r.status_code)}: {err.get('message', r.text[:200])}",
                     EXIT_FAILED)
            name = "message"
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    yield name, json.loads(line[6:])
    except httpx.HTTPError as e:
        _die(f"cannot reach the API at {client.base}: {e} (is 'closedpaw serve' running?)")


def _conversation(client: _Client, args: argparse.Namespace) -> str:
    if args.conversation:
        return str(args.conversation)
    body = {k: v for k, v in (("provider", args.provider), ("model", args.model)) if v}
    conv: str = client.call("POST", "/api/conversations", body)["conversation_id"]
    return conv


def _turn(client: _Client, conv: str, text: str, *, as_json: bool
          ) -> tuple[str, dict[str, Any]]:
    """Run one turn, printing as it goes; returns the last event."""
    last: tuple[str, dict[str, Any]] = ("error", {"code": "no_answer", "message": "no event"})
    streamed = False
    for name, data in _events(client, conv, text):
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
    if not as_json:
        sys.stdout.flush()
    return last


def _wait_resumed(client: _Client, conv: str, seen: int) -> None:
    """After a decision: wait for the turn to finish and print what it added."""
    while True:
        body = client.call("GET", f"/api/conversations/{conv}")
        if body["status"] == "idle":
            break
        time.sleep(0.2)
    for m in body["messages"][seen:]:
        if m["role"] == "tool":
            sys.stderr.write(f"  <- {m['content'][:300]}\n")
        elif m["role"] == "assistant" and m["content"]:
            sys.stdout.write(m["content"] + "\n")


def cmd_chat(args: argparse.Namespace) -> int:
    client = _Client(args)
    conv = _conversation(client, args)
    if args.message is not None:
        name, data = _turn(client, conv, args.message, as_json=args.json)
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
        except EOFError:
            sys.stderr.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            return 0
        if not text.strip():
            continue
        try:
            seen = len(client.call("GET", f"/api/conversations/{conv}")["messages"])
            name, data = _turn(client, conv, text, as_json=args.json)
            if name == "approval_required":
                answer = input("approve these exact parameters? [y/N] ").strip().lower()
                aid = data["action_id"]
                if answer == "y":
                    client.call("POST", f"/api/actions/{aid}/approve",
                                {"params_sha256": data["params_sha256"]})
                else:
                    client.call("POST", f"/api/actions/{aid}/reject",
                                {"reason": "declined in closedpaw chat"})
                _wait_resumed(client, conv, seen + 2)
        except KeyboardInterrupt:
            client.call("POST", f"/api/conversations/{conv}/cancel")
            sys.stderr.write("\nclosedpaw: turn cancelled\n")


def cmd_providers(args: argparse.Namespace) -> int:
    client = _Client(args)
    provs = client.call("GET", "/api/providers")["providers"]
    if args.providers_command == "test" and args.name:
        provs = [p for p in provs if p["name"] == args.name]
        if not provs:
            _die(f"no provider named {args.name!r}", EXIT_FAILED)
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


HANDLERS = {"chat": cmd_chat, "providers": cmd_providers}
