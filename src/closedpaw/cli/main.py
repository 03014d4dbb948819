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
                "gVisor (runsc) or runc sandboxes built from OCI bundles, and gate every risky "
                "act (risk levels, approvals bound to the exact parameters, a tamper-evident "
                "audit log, an authenticated HTTP API on loopback).")
    p.add_argument("--version", action="version", version="closedpaw 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run one command in a fresh sandbox",
                       description="Run CMD in a fresh sandbox. Without --json, its output is "
                       "streamed and its exit code returned (124 timeout, 137 OOM/killed).")
    r.add_argument("--runtime", choices=("auto", "runsc", "runc"), default=None,
                   help="force a runtime (default: auto = runsc, else runc)")
    r.add_argument("--policy", metavar="NAME", help="execution policy to start from "
                   "(see 'closedpaw policy list'); the flags below override it")
    r.add_argument("--image", metavar="NAME", help="root filesystem: host (default) or an "
                   "image of the store (see 'closedpaw image list')")
    r.add_argument("--lang", choices=("python", "node", "bash"), help="run the code given "
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
    r.add_argument("--output", metavar="DIR", help="collect /output into DIR afterwards")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the sandbox (repeatable); nothing is inherited")
    r.add_argument("--workdir", metavar="PATH", help="working directory (default /tmp)")
    r.add_argument("--stdin", action="store_true", help="pass this command's stdin through")
    r.add_argument("--json", action="store_true", help="print one JSON result object")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    d = sub.add_parser("doctor", help="show runtimes, their live probes, what is enforced, "
                       "images and the policy file")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--fresh", action="store_true", help="re-probe instead of using the cache")

    g = sub.add_parser("gc", help="remove sandboxes left behind by a process that died",
                       description="Find containers, cgroups, mounts and state directories "
                       "of sandboxes whose owning process is gone, and remove them. Sandboxes "
                       "of living processes are left alone. Exit 1 if anything could not be "
                       "removed.")
    g.add_argument("--json", action="store_true", help="print JSON")

    pol = sub.add_parser("policy", help="list and show execution policies")
    psub = pol.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=_Parser,
                              required=True)
    pl = psub.add_parser("list", help="list the policies (built-in and from the user file)")
    pl.add_argument("--json", action="store_true", help="print JSON")
    ps = psub.add_parser("show", help="show one policy, resolved")
    ps.add_argument("name", metavar="NAME")
    ps.add_argument("--json", action="store_true", help="print JSON")

    img = sub.add_parser("image", help="build, import, list, inspect and remove images")
    isub = img.add_subparsers(dest="image_command", metavar="ACTION", parser_class=_Parser,
                              required=True)
    ib = isub.add_parser("build", help="build an image with debootstrap (python, node, shell, "
                         "multi); rebuilds it if it exists")
    ib.add_argument("name", metavar="NAME",
                    help="python, node, shell or multi")
    ib.add_argument("--rebuild-base", action="store_true",
                    help="bootstrap the cached Debian base again too")
    il = isub.add_parser("list", help="list images")
    il.add_argument("--json", action="store_true", help="print JSON")
    ii = isub.add_parser("import", help="import an OCI image layout (directory or tar), a "
                         "docker-archive tarball, or docker://REF (needs skopeo and a registry)")
    ii.add_argument("path", metavar="PATH", help="an OCI layout directory or tar, a "
                    "docker-archive tar, or docker://REF")
    ii.add_argument("--name", help="image name (default: derived from PATH)")
    ii.add_argument("--ref", help="which image of a multi-image layout or archive to take")
    irm = isub.add_parser("rm", help="remove an image")
    irm.add_argument("name", metavar="NAME")
    iin = isub.add_parser("inspect", help="show an image's manifest")
    iin.add_argument("name", metavar="NAME")
    iin.add_argument("--verify", action="store_true",
                     help="recompute the digest and compare it with the manifest")

    sub.add_parser("demo", help="run Python, node and shell snippets in the sandbox and show "
                   "what protected them")
    from closedpaw.cli import gate  # serve, token, actions, audit (lazy inside)

    gate.register(sub)
    from closedpaw.cli import chat  # issue 14: chat, providers (lazy inside)

    chat.register(sub)
    return p


def _die(message: str) -> NoReturn:
    line = " ".join(str(message).split())
    sys.stderr.write(f"closedpaw: error: {line}\n")
    raise SystemExit(EXIT_USAGE)


def _spec(args: argparse.Namespace, base: Any) -> Any:
    """The run's spec: ``base`` (a policy's, or the defaults) with the flags on top."""
    from dataclasses import replace
    from pathlib import Path

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
    )


def cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.lang is None and args.code is not None:
        _die("-c CODE needs --lang python|node|bash")
    if args.lang is not None and args.code is None:
        _die(f"--lang {args.lang} needs the code with -c, e.g. --lang python -c 'print(1)'")
    if not cmd and args.lang is None:
        _die("run needs a command after '--', e.g. closedpaw run -- python3 -c 'print(1)'")
    from closedpaw.errors import ClosedPawError

    try:
        base = None
        if args.policy or args.lang:
            from closedpaw.sandbox.policy import load_policies
            from closedpaw.settings import Settings

            pols = load_policies(Settings.from_env().policy_file)
            base = (pols.for_language(args.lang, args.policy) if args.lang
                    else pols.get(args.policy)).spec
        spec = _spec(args, base)
        if args.lang:
            from dataclasses import replace

            from closedpaw.sandbox.policy import LANGUAGES

            lang = LANGUAGES[args.lang]
            spec = replace(spec, code_files={lang.filename: args.code})
            cmd = [*lang.argv, f"/code/{lang.filename}", *cmd]
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


def cmd_policy(args: argparse.Namespace) -> int:
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox.policy import load_policies
    from closedpaw.settings import Settings

    try:
        pols = load_policies(Settings.from_env().policy_file)
        if args.policy_command == "list":
            rows = [pols.get(n).to_dict() for n in pols.names()]
            if args.json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
                return 0
            from rich.console import Console
            from rich.table import Table

            t = Table("policy", "image", "memory", "cpus", "pids", "root", "timeout",
                      "description", box=None)
            for r in rows:
                t.add_row(r["name"], r["image"], f"{r['memory_mb']} MiB", f"{r['cpus']:g}",
                          str(r["pids"]), "ro" if r["readonly_root"] or r["image"] == "host"
                          else "overlay rw", f"{r['timeout_s']:g} s", r["description"])
            Console(width=160).print(t)
            return 0
        d = pols.get(args.name).to_dict()
    except ClosedPawError as e:
        _die(str(e))
    if args.json:
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(d, sort_keys=False))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from closedpaw.cli.images import main as images_main

    return images_main(args)


def cmd_demo(_: argparse.Namespace) -> int:
    from closedpaw.cli.demo import main as demo_main

    return demo_main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"run": cmd_run, "doctor": cmd_doctor, "gc": cmd_gc, "demo": cmd_demo,
                "policy": cmd_policy, "image": cmd_image}
    from closedpaw.cli.gate import HANDLERS as gate_handlers

    handlers.update(gate_handlers)
    from closedpaw.cli.chat import HANDLERS as chat_handlers

    handlers.update(chat_handlers)
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
