"""How the in-sandbox agent starts a command, run for real on the host: its vfork path
(``_posixsubprocess.fork_exec``) and its posix_spawn fallback must give the same results:
the program, its argv[0], its working directory, its fds 0-2 and nothing else, its own
session, and the same errors (with ``filename`` naming the working directory when that was
the problem). The ids the command runs with are checked inside sandboxes
(tests/adversarial/test_agent_reach.py, tests/integration/test_agent.py)."""

from __future__ import annotations

import ast
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.sandbox.agent.inside import cp_agent

SPAWNERS = ("fork_exec", "posix_spawn")


@pytest.fixture(params=SPAWNERS)
def spawner(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = cp_agent._fork_exec_args
    cp_agent._fork_exec_args = 0 if request.param == "fork_exec" else -1
    yield request.param
    cp_agent._fork_exec_args = saved


def run(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Start ``argv`` with the agent's spawn, its stdout on a pipe; exit status and output."""
    r, w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = cp_agent.spawn(argv, env or {"PATH": "/usr/bin:/bin"}, cwd, null, w, null)
    finally:
        os.close(w)
        os.close(null)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


PROBE = ("import os, sys\n"
         "def is_open(fd):\n"
         "    try:\n"
         "        return bool(os.fstat(fd))\n"
         "    except OSError:\n"
         "        return False\n"
         "fds = [fd for fd in range(1024) if is_open(fd)]\n"
         "print(sys.argv[0], sys.argv[1], os.getcwd(), fds, os.getsid(0) == os.getpid(),"
         " sep='|')\n")


def test_a_command_gets_its_argv_cwd_session_and_no_fd_of_the_spawner(
        spawner: str, tmp_path: Path) -> None:
    inheritable = {int(n) for n in os.listdir("/proc/self/fd")
                   if int(n) > 2 and _inheritable(int(n))}
    code, out = run(["python3", "-c", PROBE, "one"], str(tmp_path))
    assert code == 0, out
    zero, one, cwd, fds, session = out.decode().strip().split("|")
    assert (zero, one, cwd, session) == ("-c", "one", str(tmp_path), "True")
    extra = set(ast.literal_eval(fds)) - {0, 1, 2} - inheritable
    assert not extra, f"{spawner} passed on fds {extra}"   # the error pipe stays ours
    assert cp_agent._fork_exec_args == (-1 if spawner == "posix_spawn" else 23)


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


def test_a_relative_program_runs_from_the_working_directory(
        spawner: str, tmp_path: Path) -> None:
    prog = tmp_path / "rel"
    prog.write_text('#!/bin/sh\necho "$0"\n')
    prog.chmod(0o755)
    assert run(["./rel"], str(tmp_path)) == (0, b"./rel\n")
    assert run(["rel"], str(tmp_path), {"PATH": "/nonexistent:"}) == (0, b"rel\n")


def test_errors_are_the_same_on_both_paths(spawner: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    (tmp_path / "noshebang").write_text("echo hi\n")
    (tmp_path / "noshebang").chmod(0o755)
    (tmp_path / "badinterp").write_text("#!/nonexistent/interpreter\n")
    (tmp_path / "badinterp").chmod(0o755)
    cases = [
        (["no-such-program-here"], str(tmp_path), errno.ENOENT, "no-such-program-here"),
        ([str(tmp_path / "plain")], str(tmp_path), errno.EACCES, str(tmp_path / "plain")),
        ([str(tmp_path / "noshebang")], str(tmp_path), errno.ENOEXEC,
         str(tmp_path / "noshebang")),
        ([str(tmp_path / "badinterp")], str(tmp_path), errno.ENOENT,
         str(tmp_path / "badinterp")),
        (["true"], str(tmp_path / "missing"), errno.ENOENT, str(tmp_path / "missing")),
        (["no-such-program-here"], str(tmp_path / "missing"), errno.ENOENT,
         str(tmp_path / "missing")),
    ]
    for argv, cwd, err, filename in cases:
        with pytest.raises(OSError) as e:
            run(argv, cwd)
        assert (e.value.errno, e.value.filename) == (err, filename), (spawner, argv, cwd)
    try:   # the children that failed to exec were left for the caller to reap (the agent is
        while os.waitpid(-1, os.WNOHANG)[0]:   # init and reaps every one)
            pass
    except ChildProcessError:
        pass
