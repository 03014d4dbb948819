"""``closedpaw mcp``: the MCP server over stdio, on the data directory's gate (the same
database and audit log as ``closedpaw serve``; approvals come from ``closedpaw actions
approve`` or the API). Over HTTP it is ``/mcp`` of ``closedpaw serve``."""

from __future__ import annotations

import argparse
from typing import Any

from closedpaw.cli.util import data_dir_option, die, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve MCP over stdio (tools: run_code, sessions, skills, "
                       "gated actions)")
    data_dir_option(p)
    p.add_argument("--principal", default="mcp", metavar="NAME",
                   help="the name the client's actions are submitted and audited under "
                   "(role user; default mcp)")
    p.set_defaults(handler=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError

    name = args.principal
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum() \
            or name == "system":
        die("--principal: 1-64 letters, digits, '-' or '_' (not 'system')")
    settings = settings_from(args)
    try:
        from closedpaw.mcp.server import run_stdio

        run_stdio(settings, name)
    except ClosedPawError as e:
        die(e)
    return 0
