"""What every command module shares: how to fail, how to print, the version, the choices.

Cheap to import (argparse, json, sys): ``closedpaw run`` loads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from closedpaw.settings import RUNTIME_CHOICES

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: `closedpaw run` would pay for it
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

__all__ = ["EXIT_REFUSED", "EXIT_USAGE", "LANG_CHOICES", "ROLE_CHOICES", "RUNTIME_CHOICES",
           "Formatter", "Parser", "VersionAction", "data_dir_option", "die", "output",
           "printable", "settings_from", "terminal_width", "version"]

EXIT_REFUSED = 1   # the gate or the API said no (or a check failed)
EXIT_USAGE = 2     # bad input or an infrastructure error, with a one-line reason

#: shared choice lists; those owned by heavier modules are repeated here and a test keeps
#: them equal (settings is cheap and loaded anyway)
LANG_CHOICES = ("python", "node", "bash")
ROLE_CHOICES = ("admin", "user", "approver")


_width: int | None = None


def terminal_width() -> int:
    """What ``shutil.get_terminal_size().columns`` answers ($COLUMNS, else the terminal on
    stdout, else 80), found once per process without importing shutil (and bz2, lzma)."""
    global _width
    if _width is None:
        import os

        try:
            _width = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            _width = 0
        if _width <= 0:
            try:
                out = sys.__stdout__
                _width = os.get_terminal_size(out.fileno()).columns if out else 0
            except (AttributeError, ValueError, OSError):
                _width = 0
        if _width <= 0:
            _width = 80
    return _width


class Formatter(argparse.HelpFormatter):
    """argparse's own formatter, told the width: by default it asks shutil for it, once per
    argument it checks (the first ask imports shutil, bz2 and lzma)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         terminal_width() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"closedpaw: error: {message} (see 'closedpaw --help')\n")
        raise SystemExit(EXIT_USAGE)


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: every character that is not printable (C0 and C1
    controls such as ESC, DEL, line and paragraph separators, bidi overrides and other format
    characters, unassigned code points) becomes a visible escape (``\\x1b``, ``\\n``,
    ``\\u202e``). Names and messages that came from a sandbox (or another untrusted party)
    go through this before the CLI prints them, so they cannot move the cursor, recolour the
    screen or start a line that looks like the CLI's own (``closedpaw: ...``).
    ``keep_newlines`` keeps ``\\n`` as is, for multi-line text whose lines the caller
    indents itself."""
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable() or (keep_newlines and ch == "\n"):
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else
                       f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def die(message: object, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, then exit (2 by default); anything unprintable is escaped."""
    sys.stderr.write(f"closedpaw: error: {printable(' '.join(str(message).split()))}\n")
    raise SystemExit(code)


def output(data: Any, as_json: bool, render: Callable[[Any], str] | None = None, *,
           indent: int | None = 2) -> None:
    """Print ``data`` as JSON (``--json``) or through ``render`` (text)."""
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, indent=indent) + "\n")
    else:
        sys.stdout.write(render(data))


def version() -> str:
    """The installed package's version (from its metadata, never hard-coded)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("closedpaw")
    except PackageNotFoundError:
        return "0+unknown"


class VersionAction(argparse.Action):
    """``--version``, reading the metadata only when asked (startup stays lazy)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        sys.stdout.write(f"closedpaw {version()}\n")
        parser.exit()


def data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="ClosedPaw data directory (default: CLOSEDPAW_DATA_DIR or "
                   "/var/lib/closedpaw)")


def settings_from(args: argparse.Namespace, **more: Any) -> Any:
    """Settings from the environment with the command's flags on top (``--data-dir`` and
    ``more``; None = not given). A bad value exits 2 with the variable's name."""
    from closedpaw.errors import ConfigError
    from closedpaw.settings import Settings

    changes = {k: v for k, v in more.items() if v is not None}
    if getattr(args, "data_dir", None) is not None:
        changes["data_dir"] = args.data_dir.absolute()
    try:
        return Settings.from_env(**changes)
    except ConfigError as e:
        die(e)


def client_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that talks to the API through :mod:`closedpaw.client`."""
    data_dir_option(p)
    p.add_argument("--url", help="API base URL (default: CLOSEDPAW_API_URL or "
                   "http://127.0.0.1:8765)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the bearer token (default: CLOSEDPAW_API_TOKEN, else "
                   "DATA_DIR/api-token)")
    p.add_argument("--json", action="store_true", help="print JSON")


def client_from(args: argparse.Namespace) -> Any:
    """A :class:`closedpaw.client.Client` for the options of :func:`client_options` (imported
    here, so the CLI start stays free of httpx); a bad setting exits 2."""
    from closedpaw.client import Client
    from closedpaw.errors import ConfigError

    try:
        return Client(settings=settings_from(args, api_url=args.url),
                      token_file=args.token_file)
    except ConfigError as e:
        die(e)
