"""``closedpaw`` command line. Imports stay lazy: ``closedpaw run`` must start fast.

Exit codes: the sandboxed program's own code for ``run``; 124 when it timed out and 137 when
it was OOM-killed (as ``timeout(1)`` and docker report them); with ``--json``, 0 whenever the
sandbox ran. Usage and infrastructure errors: 2, with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from closedpaw.cli.util import (
    EXIT_USAGE,
    LANG_CHOICES,
    RUNTIME_CHOICES,
    Parser,
    VersionAction,
)
from closedpaw.cli.util import die as _die

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: `closedpaw run` would pay for it
    from collections.abc import Sequence
    from typing import Any, NoReturn

EXIT_TIMEOUT = 124
EXIT_KILLED = 137


#: the modules that register commands, in the order ``--help`` lists them
COMMAND_MODULES = ("system", "policy", "images", "gate", "actions", "chat", "channels",
                   "skills", "mcp", "vault", "screen")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. Each command module adds its own subcommands with
    ``register(subparsers)``; none imports more than argparse to do so.

    ``command="run"`` builds only ``run`` (the one-shot path): parsing ``run ...`` gives the
    same result and the same errors either way, since argparse hands everything after the
    command name to that command's own parser; the other command modules are not loaded."""
    p = Parser(prog="closedpaw", description="ClosedPaw: run untrusted code in hardened "
               "gVisor (runsc) or runc sandboxes built from OCI bundles, and gate every risky "
               "act (risk levels, approvals bound to the exact parameters, a tamper-evident "
               "audit log, an authenticated HTTP API on loopback).")
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    register(sub)
    if command == "run":
        return p
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"closedpaw.cli.{name}").register(sub)
    return p


def register(sub: Any) -> None:
    """``closedpaw run`` (the one-shot path lives here)."""
    r = sub.add_parser("run", help="run one command in a fresh sandbox",
                       description="Run CMD in a fresh sandbox. Without --json, its output is "
                       "streamed and its exit code returned (124 timeout, 137 OOM/killed).")
    r.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="force a runtime (default: auto = runsc, else runc)")
    r.add_argument("--policy", metavar="NAME", help="execution policy to start from "
                   "(see 'closedpaw policy list'); the flags below override it")
    r.add_argument("--image", metavar="NAME", help="root filesystem: host (default) or an "
                   "image of the store (see 'closedpaw image list')")
    r.add_argument("--lang", choices=LANG_CHOICES, help="run the code given "
                   "with -c in this language, under its policy (python, node, shell)")
    r.add_argument("-c", dest="code", metavar="CODE", help="code for --lang; it is written "
                   "to /code/main.<ext> and run; words after -- become its arguments")
    r.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 256m or 1g "
                   "(default 512m)")
    r.add_argument("--cpus", type=float, metavar="N", help="CPU cores (default 1.0)")
    r.add_argument("--pids", type=int, metavar="N", help="max processes (default 64)")
    r.add_argument("--disk", metavar="SIZE", help="size of the writable /tmp, and of the "
                   "writable layer of a store image's root (default 1g)")
    r.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wall-clock limit (default 1800)")
    r.add_argument("--input", metavar="PATH", help="file or directory copied to /input "
                   "(read-only)")
    r.add_argument("--output", metavar="DIR", help="collect /output into DIR afterwards "
                   "(existing entries of DIR are kept and reported, unless --overwrite)")
    r.add_argument("--overwrite", action="store_true", help="let /output replace existing "
                   "files of --output DIR and merge into its existing directories")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the sandbox (repeatable); nothing is inherited")
    r.add_argument("--workdir", metavar="PATH", help="working directory (default /tmp)")
    r.add_argument("--stdin", action="store_true", help="pass this command's stdin through")
    r.add_argument("--json", action="store_true", help="print one JSON result object")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    r.set_defaults(handler=cmd_run)


def _spec(args: argparse.Namespace, base: Any) -> Any:
    """The run's spec: ``base`` (a policy's, or the defaults) with the flags on top."""
    from pathlib import Path

    from closedpaw._record import replace
    from closedpaw.sandbox.spec import SandboxSpec, parse_size_mb

    if base is None:
        base = SandboxSpec()
    lim: dict[str, Any] = {}
    if args.memory is not None:
        lim["memory_mb"] = parse_size_mb(args.memory, "--memory")
    if args.disk is not None:
        lim["disk_mb"] = parse_size_mb(args.disk, "--disk")
    if args.cpus is not None:
        lim["cpu_cores"] = args.cpus
    if args.pids is not None:
        lim["max_processes"] = args.pids
    if args.timeout is not None:
        lim["timeout_s"] = args.timeout
    env: dict[str, str] = dict(base.env)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            _die(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return replace(
        base, limits=replace(base.limits, **lim) if lim else base.limits, env=env,
        workdir=args.workdir or base.workdir, image=args.image or base.image,
        input_path=Path(args.input) if args.input else None,
        output_dir=Path(args.output) if args.output else None,
        output_overwrite=bool(args.overwrite),
    )


def cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.lang is None and args.code is not None:
        _die("-c CODE needs --lang python|node|bash")
    if args.lang is not None and args.code is None:
        _die(f"--lang {args.lang} needs the code with -c, e.g. --lang python -c 'print(1)'")
    if args.overwrite and not args.output:
        _die("--overwrite needs --output DIR")
    if not cmd and args.lang is None:
        _die("run needs a command after '--', e.g. closedpaw run -- python3 -c 'print(1)'")
    from closedpaw.errors import ClosedPawError

    try:
        base = None
        if args.policy or args.lang:
            from closedpaw.sandbox.policy import load_policies
            from closedpaw.settings import Settings

            pols = load_policies(Settings.from_env().sandbox.policy_file)
            base = (pols.for_language(args.lang, args.policy) if args.lang
                    else pols.get(args.policy)).spec
        spec = _spec(args, base)
        if args.lang:
            from closedpaw._record import replace
            from closedpaw.sandbox.policy import LANGUAGES

            lang = LANGUAGES[args.lang]
            spec = replace(spec, code_files={lang.filename: args.code})
            cmd = [*lang.argv, f"/code/{lang.filename}", *cmd]
        if args.input:
            import os
            if not os.path.exists(args.input):
                _die(f"--input {args.input}: no such file or directory")
        stdin = sys.stdin.buffer.read() if args.stdin else b""
        from closedpaw.sandbox.host.reaper import Reaper
        from closedpaw.sandbox.lifecycle.manager import SandboxManager
        from closedpaw.settings import Settings

        settings = Settings.from_env()
        # Teardown is deferred, then handed to a detached child once the result is in, so
        # this command exits as soon as the program has. On any error or interrupt it runs
        # inline instead, before we exit.
        reaper = Reaper(deferred=True, error_log=settings.state_dir / "cleanup-errors.log")
        mgr = SandboxManager(settings, reaper=reaper)
        sink = None if args.json else _stream
        _interrupt_on_termination()
        try:
            result = mgr.run(cmd, spec, runtime=args.runtime, stdin=stdin, sink=sink)
        except BaseException:
            reaper.drain()
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        reaper.detach()
    except ClosedPawError as e:
        _die(str(e))
    except KeyboardInterrupt:
        sys.stderr.write("closedpaw: interrupted; the sandbox was killed\n")
        return 130
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return 0
    sys.stdout.flush()
    for name, cut, total in (("stdout", result.stdout_truncated, result.stdout_total_bytes),
                             ("stderr", result.stderr_truncated, result.stderr_total_bytes)):
        if cut:
            sys.stderr.write(f"closedpaw: {name} truncated at {spec.limits.output_cap_bytes} "
                             f"bytes ({total} written)\n")
    from closedpaw.cli.util import printable  # names and reasons may come from the sandbox

    for s in result.skipped_files:
        sys.stderr.write(f"closedpaw: /output/{printable(s.path)} not copied: "
                         f"{printable(s.reason)}\n")
    if result.timed_out:
        sys.stderr.write(f"closedpaw: timed out after {spec.limits.timeout_s:g} s\n")
        return EXIT_TIMEOUT
    if result.oom_killed:
        sys.stderr.write(f"closedpaw: killed: out of memory ({spec.limits.memory_mb} MiB)\n")
        return EXIT_KILLED
    return result.exit_code


def _interrupt_on_termination() -> None:
    """SIGTERM/SIGHUP become KeyboardInterrupt, so the sandbox is killed and deleted by id
    (the runtime runs in its own session and would otherwise outlive us)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _stream(name: str, data: bytes) -> None:
    f = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
    f.write(data)
    f.flush()


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser("run" if words[:1] == ["run"] else None)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
        return code
    except BrokenPipeError:
        return 1


def entry() -> NoReturn:
    """The ``closedpaw`` console script: :func:`main`, then a quick exit.

    Exit handlers (``atexit``) run as usual; what is skipped is the interpreter's teardown of
    every module, a few milliseconds that a one-shot ``closedpaw run`` would otherwise add.

    ``closedpaw run`` also turns the cyclic garbage collector off: a one-shot process creates
    few cycles, and the collector's passes over the objects its imports create (~20 of them)
    cost a few milliseconds per run. Every other command (the server above all) keeps it.
    """
    import atexit
    import os

    if sys.argv[1:2] == ["run"]:
        import gc

        gc.disable()
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()
