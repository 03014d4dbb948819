"""``closedpaw`` command line. Imports stay lazy: ``closedpaw run`` must start fast.

Exit codes: the sandboxed program's own code for ``run``; 124 when it timed out and 137 when
it was OOM-killed (as ``timeout(1)`` and docker report them); with ``--json``, 0 whenever the
sandbox ran. Usage and infrastructure errors: 2, with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_KILLED = 137


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"closedpaw: error: {message} (see 'closedpaw --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="closedpaw", description="ClosedPaw: run untrusted code in hardened "
                "gVisor (runsc) or runc sandboxes built from OCI bundles.")
    p.add_argument("--version", action="version", version="closedpaw 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run one command in a fresh sandbox",
                       description="Run CMD in a fresh sandbox. Without --json, its output is "
                       "streamed and its exit code returned (124 timeout, 137 OOM/killed).")
    r.add_argument("--runtime", choices=("auto", "runsc", "runc"), default=None,
                   help="force a runtime (default: auto = runsc, else runc)")
    r.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 256m or 1g "
                   "(default 512m)")
    r.add_argument("--cpus", type=float, metavar="N", help="CPU cores (default 1.0)")
    r.add_argument("--pids", type=int, metavar="N", help="max processes (default 64)")
    r.add_argument("--disk", metavar="SIZE", help="size of the writable /tmp (default 1g)")
    r.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wall-clock limit (default 1800)")
    r.add_argument("--input", metavar="PATH", help="file or directory copied to /input "
                   "(read-only)")
    r.add_argument("--output", metavar="DIR", help="collect /output into DIR afterwards")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the sandbox (repeatable); nothing is inherited")
    r.add_argument("--workdir", metavar="PATH", help="working directory (default /tmp)")
    r.add_argument("--stdin", action="store_true", help="pass this command's stdin through")
    r.add_argument("--json", action="store_true", help="print one JSON result object")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    d = sub.add_parser("doctor", help="show runtimes, their live probes and what is enforced")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--fresh", action="store_true", help="re-probe instead of using the cache")

    g = sub.add_parser("gc", help="remove sandboxes left behind by a process that died",
                       description="Find containers, cgroups, mounts and state directories "
                       "of sandboxes whose owning process is gone, and remove them. Sandboxes "
                       "of living processes are left alone. Exit 1 if anything could not be "
                       "removed.")
    g.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("demo", help="run Python, node and shell snippets in the sandbox and show "
                   "what protected them")
    from closedpaw.cli import gate  # serve, token, actions, audit (lazy inside)

    gate.register(sub)
    return p


def _die(message: str) -> NoReturn:
    line = " ".join(str(message).split())
    sys.stderr.write(f"closedpaw: error: {line}\n")
    raise SystemExit(EXIT_USAGE)


def _spec(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec, parse_size_mb

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
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            _die(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return SandboxSpec(
        limits=ResourceLimits(**lim), env=env, workdir=args.workdir or "/tmp",
        input_path=Path(args.input) if args.input else None,
        output_dir=Path(args.output) if args.output else None,
    )


def cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        _die("run needs a command after '--', e.g. closedpaw run -- python3 -c 'print(1)'")
    from closedpaw.errors import ClosedPawError

    try:
        spec = _spec(args)
        if args.input:
            import os
            if not os.path.exists(args.input):
                _die(f"--input {args.input}: no such file or directory")
        stdin = sys.stdin.buffer.read() if args.stdin else b""
        from closedpaw.sandbox.manager import SandboxManager
        from closedpaw.sandbox.reaper import Reaper
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
    for s in result.skipped_files:
        sys.stderr.write(f"closedpaw: /output/{s.path} not copied: {s.reason}\n")
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from closedpaw.sandbox.doctor import diagnose, render

    report = diagnose(fresh=args.fresh)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render(report))
    return 0 if report["usable"] else 1


def cmd_gc(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox.manager import SandboxManager

    try:
        report = SandboxManager().gc()
    except ClosedPawError as e:
        _die(str(e))
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        for line in report.details:
            sys.stdout.write(f"found {line}\n")
        sys.stdout.write(f"removed {len(report.removed)} sandbox(es), left "
                         f"{len(report.live)} live one(s) alone\n")
        for err in report.errors:
            sys.stderr.write(f"closedpaw: could not remove {err}\n")
    return 1 if report.errors else 0


def cmd_demo(_: argparse.Namespace) -> int:
    from closedpaw.cli.demo import main as demo_main

    return demo_main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"run": cmd_run, "doctor": cmd_doctor, "gc": cmd_gc, "demo": cmd_demo}
    from closedpaw.cli.gate import HANDLERS as gate_handlers

    handlers.update(gate_handlers)
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        return 1


def entry() -> NoReturn:
    """The ``closedpaw`` console script: :func:`main`, then a quick exit.

    Exit handlers (``atexit``) run as usual; what is skipped is the interpreter's teardown of
    every module, a few milliseconds that a one-shot ``closedpaw run`` would otherwise add.
    """
    import atexit
    import os

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
