"""The ClosedPaw in-sandbox agent: PID 1 of a long-lived sandbox.

Starts inside the sandbox as its uid 0 holding only CAP_SETUID and CAP_SETGID (the sandbox's
seccomp profile, no new privileges) with the image's own ``python3 -I -S``, and before it
reads any request becomes real uid/gid 65534 with effective and saved uid/gid ``AGENT_UID``:
no id is 0 any more, so the kernel clears every capability. Commands start while the agent
holds effective ids 65534 for a moment (or with posix_spawn's RESETIDS: effective ids :=
real ids) and so run as 65534 in every id, never as the agent: they cannot open its
``/proc/1/fd`` (the channel), its memory or ptrace it.
It imports nothing of ClosedPaw: it is bind-mounted read-only at ``/.closedpaw/cp_agent.py``
and speaks only the frame protocol on its stdin (requests from the host) and stdout
(replies). It

* starts each command directly (vfork-style, with its own pipes, a new session, no shell),
* streams stdout/stderr in frames carrying the request id and a per-request sequence number,
* enforces each command's timeout (SIGKILL of its process group) and its output cap,
* reports the exit status, and reaps every zombie of the sandbox (it is init),
* drives persistent interpreters ("kernels") for stateful code cells.

Frame: a 16-byte big-endian header (type u8, flags u8, reserved u16, request id u32,
sequence u32, payload length u32) and at most ``MAX_PAYLOAD`` bytes of payload.
Requests (EXEC, CELL) carry a ``marshal``-encoded dict from the host; replies (READY, EXIT,
RESULT) carry a JSON object, which the host parses as untrusted.
The host side is :mod:`closedpaw.sandbox.agent.channel`; the constants must match.
"""

from __future__ import annotations

# Only built-in modules: every import costs a path search and file reads, and under gVisor
# (ptrace) each of those syscalls is slow, so the agent keeps its start-up to the interpreter
# itself. `posix` is `os` without its Python layer, `_signal` is `signal` without its enums,
# `select.poll` stands in for `selectors`, subprocess's `_posixsubprocess` (imported by the
# first command; built in to Debian's python3) or else posix_spawn for `subprocess`, marshal
# (requests from the trusted host) and a few lines of JSON writing (replies) for `json`; code
# cells, which start an interpreter anyway, import json when the first one runs.
import _signal  # type: ignore[import-not-found]  # no stub; `signal` minus its enums
import marshal
import posix
import select
import sys
import time
from _struct import Struct
from errno import EACCES, ENOENT, ENOTDIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEADER = Struct(">BBHIII")
MAX_PAYLOAD = 256 * 1024
# host -> agent
T_EXEC, T_STDIN, T_KILL, T_CELL = 1, 2, 3, 4
# agent -> host
T_READY, T_OUT, T_ERR, T_EXIT, T_RESULT = 16, 17, 18, 19, 20

DRAIN_GRACE_S = 2.0
VALUE_CAP = 64 * 1024
KERNELS = {
    "python": ["python3", "-I", "/.closedpaw/cp_pykernel.py"],
    "node": ["node", "/.closedpaw/cp_nodekernel.js"],
}


SANDBOX_ID = 65534          # the sandbox user: every command runs as it
AGENT_UID = AGENT_GID = 65533  # bundle.oci.AGENT_UID: the agent itself
_own_ids = False            # set by become_agent: effective and saved ids are AGENT_UID/GID


def _status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def become_agent() -> None:
    """Leave uid 0 for good: real 65534 (what commands become), effective and saved
    AGENT_UID. The kernel clears all capabilities when no uid stays 0; the agent checks
    that it did and refuses to run otherwise (fail closed)."""
    if posix.getuid() == 0:
        posix.setgroups([SANDBOX_ID])
        posix.setresgid(SANDBOX_ID, AGENT_GID, AGENT_GID)
        posix.setresuid(SANDBOX_ID, AGENT_UID, AGENT_UID)
    fd = posix.open("/proc/self/status", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        text = posix.read(fd, 65536).decode(errors="replace")
    finally:
        posix.close(fd)
    caps = [_status_field(text, k) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")]
    ok = (posix.getresuid() == (SANDBOX_ID, AGENT_UID, AGENT_UID)
          and posix.getresgid() == (SANDBOX_ID, AGENT_GID, AGENT_GID)
          and bool(caps[1]) and bool(caps[2])  # gVisor has no CapAmb line
          and all(int(c or "0", 16) == 0 for c in caps))
    if not ok:
        sys.stderr.write("closedpaw-agent: could not separate from the sandbox user "
                         f"(uids {posix.getresuid()}, caps {caps})\n")
        raise SystemExit(70)
    global _own_ids
    _own_ids = True


_json_module: Any = None


def _json() -> Any:
    """The json module, imported on first use (code cells only)."""
    global _json_module
    if _json_module is None:
        import json

        _json_module = json
    return _json_module


def _quote(text: str) -> str:
    """``text`` as a JSON string, ASCII only (what ``json.dumps`` writes)."""
    out = ['"']
    for ch in text:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= c < 0x7F:
            out.append(ch)
        elif c > 0xFFFF:
            c -= 0x10000
            out.append(f"\\u{0xD800 | (c >> 10):04x}\\u{0xDC00 | (c & 0x3FF):04x}")
        else:
            out.append(f"\\u{c:04x}")
    out.append('"')
    return "".join(out)


def dumps(obj: dict[str, Any]) -> bytes:
    """A flat dict of str, int, float, bool and None values as a JSON object."""
    parts = []
    for k, v in obj.items():
        if v is None:
            enc = "null"
        elif v is True or v is False:
            enc = "true" if v else "false"
        elif isinstance(v, int):
            enc = str(v)
        elif isinstance(v, float):
            enc = repr(v) if v - v == 0 else "0"  # finite only
        else:
            enc = _quote(str(v))
        parts.append(f"{_quote(k)}: {enc}")
    return ("{" + ", ".join(parts) + "}").encode()


def as_sandbox_user() -> bool:
    """Take effective uid/gid 65534 for a moment (see :func:`back_to_agent`); False when the
    agent has no identity of its own to leave (not started through :func:`become_agent`)."""
    if not _own_ids:
        return False
    posix.setresgid(-1, SANDBOX_ID, -1)
    posix.setresuid(-1, SANDBOX_ID, -1)
    return True


def back_to_agent() -> None:
    """Effective ids back to AGENT_UID/AGENT_GID (the saved ones). Should that fail, the
    agent must not go on with the sandbox user's ids: it stops (fail closed)."""
    try:
        posix.setresuid(-1, AGENT_UID, -1)
        posix.setresgid(-1, AGENT_GID, -1)
    except OSError as e:
        sys.stderr.write(f"closedpaw-agent: cannot return to its own uid: {e}\n")
        posix._exit(70)


def user_pipes(n: int) -> list[tuple[int, int]]:
    """``n`` pipes owned by the sandbox user (created with effective ids 65534 for a moment):
    a command may reopen its ends as /dev/stdout or /dev/stderr (an open of a pipe through
    /proc checks the pipe's owner). Its stdin, and the kernels' control pipes, which carry
    what the host sent, stay the agent's: no sandbox process can reopen them."""
    swapped = as_sandbox_user()
    try:
        return [posix.pipe2(posix.O_CLOEXEC) for _ in range(n)]
    finally:
        if swapped:
            back_to_agent()


def _candidates(file: str, env: dict[str, str]) -> list[str]:
    """Where ``file`` may be: itself when it has a slash, else each directory of the ``PATH``
    of ``env`` (``/bin:/usr/bin`` without one), as ``subprocess`` searches."""
    if "/" in file:
        return [file]
    path = env.get("PATH", "/bin:/usr/bin")
    return [f"{d.rstrip('/')}/{file}" if d else file for d in path.split(":")]


def find_program(argv0: str, env: dict[str, str], cwd: str) -> tuple[list[str], int]:
    """The candidates for ``argv0`` from the first one the sandbox user may execute on
    (a relative one is checked in ``cwd``, where the child runs it), which the child tries
    in order as ``subprocess`` does, and EACCES if one before them exists but may not be
    executed (else 0). Raises ``OSError`` when none is executable: a bad ``cwd`` first
    (``filename`` is ``cwd``), else EACCES if one exists but may not be executed, else
    ENOENT."""
    saved = 0
    paths = _candidates(argv0, env)
    for i, path in enumerate(paths):
        here = path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}"
        if posix.access(here, posix.X_OK):   # the real uid: 65534, what the command runs as
            return paths[i:], saved
        try:
            posix.stat(here)
        except OSError:
            continue                # not there: try the next directory
        saved = saved or EACCES
    posix.chdir(cwd)                # OSError(filename=cwd): the caller reports a bad workdir
    posix.chdir("/")
    err = saved or ENOENT
    raise OSError(err, posix.strerror(err), argv0)


# _posixsubprocess.fork_exec (what subprocess uses, built into Debian's python3) starts a
# command with vfork: its child asks only about each signal's handler (~65 calls) where
# glibc's posix_spawn also sets every one (~120), and under gVisor's ptrace platform each
# call costs ~23 us. Its arguments are private to CPython: 23 of them from 3.11.2 to 3.14
# (the last one allow_vfork), 22 without it. Another count raises TypeError before any child
# exists, and the agent then keeps to posix_spawn.
_fork_exec: Any = None
_fork_exec_args = 0          # 23 or 22 once one worked; -1: posix_spawn only


def spawn(argv: list[str], env: dict[str, str], cwd: str, stdin: int, stdout: int,
          stderr: int) -> int:
    """Start ``argv`` in ``cwd`` as the sandbox user (65534 in every id), in a new session,
    with the given fds as 0, 1 and 2, nothing else open (every other fd of the agent is
    close-on-exec) and default signal handlers; returns the pid. Raises ``OSError``
    (``filename`` is ``cwd`` when the directory was the problem).

    The agent takes effective uid/gid 65534 around the start: the child (vfork-style, no
    copy of the agent's memory, which gVisor makes slow) then has 65534 as real and
    effective ids, and ``exec`` makes them the saved ids too, so a command never holds
    the agent's uid (posix_spawn's RESETIDS does the same in the child)."""
    global _fork_exec, _fork_exec_args
    paths, saved = find_program(argv[0], env, cwd)
    if _fork_exec_args == 0:
        try:
            from _posixsubprocess import fork_exec
        except ImportError:
            _fork_exec_args = -1
        else:
            _fork_exec = fork_exec
    if _fork_exec_args < 0:
        return _posix_spawn(argv, env, cwd, paths, saved, (stdin, stdout, stderr))
    err_r, err_w = posix.pipe2(posix.O_CLOEXEC)    # the child's report if it cannot exec
    pid = 0
    try:
        args = [[a.encode() for a in argv], [p.encode() for p in paths], False, (), cwd,
                [f"{k}={v}".encode() for k, v in env.items()],
                stdin, -1, -1, stdout, -1, stderr, err_r, err_w,
                True, True, -1, None, None, None, -1, None, True]
        swapped = as_sandbox_user()
        try:
            for n in ((_fork_exec_args,) if _fork_exec_args else (23, 22)):
                try:
                    pid = _fork_exec(*args[:n])
                except TypeError:     # not this CPython's arguments: no child was made
                    continue
                _fork_exec_args = n
                break
        finally:
            if swapped:
                back_to_agent()
        if not pid:
            _fork_exec_args = -1
            return _posix_spawn(argv, env, cwd, paths, saved, (stdin, stdout, stderr))
        posix.close(err_w)
        err_w = -1
        report = b""
        while len(report) < 4096:
            data = posix.read(err_r, 512)   # EOF once the child exec'd (close-on-exec)
            if not data:
                break
            report += data
    finally:
        _close(err_r, *((err_w,) if err_w >= 0 else ()))
    if not report:
        return pid
    # "OSError:<errno hex>:" (+ "noexec" when it failed before its exec: entering cwd);
    # the child has exited (255) and the agent reaps it like any other
    parts = report.decode(errors="replace").split(":", 2)
    try:
        err = int(parts[1], 16) if len(parts) > 1 else 0
    except ValueError:
        err = 0
    bad_dir = len(parts) > 2 and parts[2] == "noexec"
    if not bad_dir and err in (0, ENOENT, ENOTDIR) and saved:
        err = saved           # the first error in PATH order, as subprocess reports it
    err = err or EACCES
    raise OSError(err, posix.strerror(err), cwd if bad_dir else argv[0])


def _posix_spawn(argv: list[str], env: dict[str, str], cwd: str, paths: list[str],
                 saved: int, fds: tuple[int, int, int]) -> int:
    """:func:`spawn` with posix_spawn, which cannot change directory (the agent changes its
    own and back) and resets the ids in the child (RESETIDS)."""
    actions = [(posix.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)]
    posix.chdir(cwd)  # OSError(filename=cwd): the caller reports a bad workdir
    try:
        for path in paths:
            try:
                # resetids: the child's effective ids become the agent's real ones (65534)
                # before exec, which then makes them the saved ids too.
                return posix.posix_spawn(path, argv, env, file_actions=actions, setsid=True,
                                         resetids=True,
                                         setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
            except OSError as e:
                if e.errno not in (ENOENT, ENOTDIR):
                    saved = saved or e.errno or EACCES
        err = saved or ENOENT
        raise OSError(err, posix.strerror(err), argv[0])
    finally:
        posix.chdir("/")


def read_chunk(fd: int) -> bytes | None:
    """Up to 64 KiB from a non-blocking ``fd``: ``None`` when nothing is there yet, ``b""`` at
    end of file or on an error (the stream is over either way)."""
    try:
        return posix.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Job:
    """A command (or a kernel cell) whose output is streamed under one request id."""

    def __init__(self, rid: int, cap: int, deadline: float) -> None:
        self.rid = rid
        self.seq = 0
        self.cap = cap
        self.deadline = deadline
        self.pid = 0
        self.fds: dict[int, int] = {}          # fd -> frame type (T_OUT/T_ERR)
        self.sent = {T_OUT: 0, T_ERR: 0}
        self.total = {T_OUT: 0, T_ERR: 0}
        self.stdin_fd: int | None = None
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.status: int | None = None
        self.cpu_ms = 0.0
        self.maxrss_kb = 0
        self.timed_out = False
        self.killed = False
        self.drain_until: float | None = None
        self.kernel: Kernel | None = None
        self.restarted = False   # a cell run by a fresh kernel after the last one died


class Kernel:
    """A persistent interpreter: cells go in on a control pipe, results come back on another,
    the cell's prints arrive on the interpreter's own stdout/stderr pipes."""

    def __init__(self, lang: str, pid: int, out_fd: int, err_fd: int, ctl_w: int,
                 res_r: int) -> None:
        self.lang = lang
        self.pid = pid
        self.ctl_w = ctl_w
        self.res_r = res_r
        self.res_buf = bytearray()
        self.out_fd = out_fd
        self.err_fd = err_fd
        self.job: Job | None = None
        self.status: int | None = None


def _close(*fds: int) -> None:
    for fd in fds:
        try:  # noqa: SIM105 (contextlib is not imported here)
            posix.close(fd)
        except OSError:
            pass


def _killpg(pid: int) -> None:
    try:  # noqa: SIM105 (contextlib is not imported here)
        posix.killpg(pid, _signal.SIGKILL)
    except OSError:
        pass


class Agent:
    def __init__(self) -> None:
        try:
            inherited = [int(n) for n in posix.listdir("/proc/self/fd")]
        except OSError:
            inherited = []
        for fd in inherited:  # nothing the runtime passed on leaks to commands
            if fd > 2:
                try:  # noqa: SIM105 (contextlib is not imported here)
                    posix.set_inheritable(fd, False)
                except OSError:
                    pass
        self.inp = posix.dup(0)
        self.out = posix.dup(1)
        null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
        for fd in (0, 1):
            posix.dup2(null, fd)
        self.null = null                       # the stdin of commands that take none
        posix.set_inheritable(self.inp, False)
        posix.set_inheritable(self.out, False)
        posix.set_blocking(self.inp, False)
        self.poll = select.poll()
        self.tags: dict[int, Any] = {}         # watched fd -> what it is
        self.watch(self.inp, "chan")
        wr, ww = posix.pipe2(posix.O_NONBLOCK | posix.O_CLOEXEC)
        self.wake_r = wr
        _signal.set_wakeup_fd(ww)
        _signal.signal(_signal.SIGCHLD, lambda *_: None)
        self.stop = False
        _signal.signal(_signal.SIGTERM, self._term)
        _signal.signal(_signal.SIGINT, self._term)
        self.watch(wr, "wake")
        self.buf = bytearray()
        self.jobs: dict[int, Job] = {}
        self.by_pid: dict[int, Job] = {}
        self.kernels: dict[str, Kernel] = {}
        self.kernel_pids: dict[int, Kernel] = {}
        self.lost: set[str] = set()   # languages whose kernel died between cells

    def _term(self, *_: object) -> None:
        self.stop = True

    def watch(self, fd: int, tag: Any, write: bool = False) -> None:
        self.tags[fd] = tag
        self.poll.register(fd, select.POLLOUT if write else select.POLLIN)

    def unwatch(self, fd: int) -> None:
        if self.tags.pop(fd, None) is not None:
            self.poll.unregister(fd)

    # -- channel ------------------------------------------------------------------------------
    def send(self, typ: int, rid: int, seq: int, payload: bytes = b"") -> None:
        data = HEADER.pack(typ, 0, 0, rid, seq, len(payload)) + payload
        view = memoryview(data)
        while view:
            try:
                n = posix.write(self.out, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            view = view[n:]

    def send_job(self, job: Job, typ: int, payload: bytes = b"") -> None:
        self.send(typ, job.rid, job.seq, payload)
        job.seq += 1

    def read_channel(self) -> None:
        while True:
            try:
                data = posix.read(self.inp, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                self.stop = True  # the host went away: end the sandbox
                return
            self.buf += data
        while len(self.buf) >= HEADER.size:
            typ, _, _, rid, _, n = HEADER.unpack_from(self.buf)
            if n > MAX_PAYLOAD:
                sys.stderr.write("closedpaw-agent: oversized frame from host\n")
                self.stop = True
                return
            if len(self.buf) < HEADER.size + n:
                break
            payload = bytes(self.buf[HEADER.size:HEADER.size + n])
            del self.buf[:HEADER.size + n]
            self.handle(typ, rid, payload)

    def handle(self, typ: int, rid: int, payload: bytes) -> None:
        if typ == T_EXEC:
            self.start_exec(rid, marshal.loads(payload))
        elif typ == T_STDIN:
            job = self.jobs.get(rid)
            if job is not None and job.stdin_fd is not None:
                if payload:
                    job.stdin_buf += payload
                else:
                    job.stdin_eof = True
                self.flush_stdin(job)
        elif typ == T_KILL:
            job = self.jobs.get(rid)
            if job is not None:
                job.killed = True
                self.kill_job(job)
        elif typ == T_CELL:
            self.start_cell(rid, marshal.loads(payload))

    # -- commands -----------------------------------------------------------------------------
    def start_exec(self, rid: int, req: dict[str, Any]) -> None:
        job = Job(rid, int(req["cap"]), time.monotonic() + float(req["timeout_ms"]) / 1000)
        argv = [str(a) for a in req["argv"]]
        cwd = str(req["cwd"])
        env = {str(k): str(v) for k, v in req["env"].items()}
        (out_r, out_w), (err_r, err_w) = user_pipes(2)
        in_r = in_w = -1
        if req.get("stdin"):
            in_r, in_w = posix.pipe2(posix.O_CLOEXEC)
        try:
            job.pid = spawn(argv, env, cwd, in_r if in_w >= 0 else self.null, out_w, err_w)
        except OSError as e:
            _close(out_r, err_r, *((in_w,) if in_w >= 0 else ()))
            if e.filename == cwd:
                why, code = "workdir", 126
            elif isinstance(e, FileNotFoundError):
                why, code = "not-found", 127
            elif isinstance(e, PermissionError):
                why, code = "permission", 126
            else:
                why, code = "exec-failed", 126
            self.send_job(job, T_EXIT, dumps(
                {"code": code, "spawn_error": why, "message": str(e.strerror or e)}))
            return
        finally:
            _close(out_w, err_w, *((in_r,) if in_w >= 0 else ()))
        for fd, typ in ((out_r, T_OUT), (err_r, T_ERR)):
            posix.set_blocking(fd, False)
            job.fds[fd] = typ
            self.watch(fd, job)
        if in_w >= 0:
            posix.set_blocking(in_w, False)
            job.stdin_fd = in_w
        self.jobs[rid] = job
        self.by_pid[job.pid] = job

    def flush_stdin(self, job: Job) -> None:
        fd = job.stdin_fd
        if fd is None:
            return
        try:
            while job.stdin_buf:
                n = posix.write(fd, job.stdin_buf[:65536])
                del job.stdin_buf[:n]
        except BlockingIOError:
            pass
        except OSError:  # the command closed its stdin: drop the rest
            job.stdin_buf.clear()
        registered = fd in self.tags
        if job.stdin_buf and not registered:
            self.watch(fd, ("stdin", job), write=True)
        elif not job.stdin_buf:
            if registered:
                self.unwatch(fd)
            if job.stdin_eof:
                posix.close(fd)
                job.stdin_fd = None

    def pump(self, job: Job, fd: int) -> None:
        typ = job.fds[fd]
        data = read_chunk(fd)
        if data is None:
            return
        if not data:
            self.unwatch(fd)
            if job.kernel is None:
                posix.close(fd)
            del job.fds[fd]
            return
        self.forward(job, typ, data)

    def forward(self, job: Job, typ: int, data: bytes) -> None:
        job.total[typ] += len(data)
        room = job.cap - job.sent[typ]
        keep = data[:max(0, room)]
        for i in range(0, len(keep), MAX_PAYLOAD):
            part = keep[i:i + MAX_PAYLOAD]
            self.send_job(job, typ, part)
            job.sent[typ] += len(part)

    def kill_job(self, job: Job) -> None:
        if job.pid and job.status is None:
            _killpg(job.pid)
        if job.drain_until is None:
            job.drain_until = time.monotonic() + DRAIN_GRACE_S

    def reap(self) -> None:
        while True:
            try:
                pid, status, ru = posix.wait4(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.by_pid.pop(pid, None)
            if job is not None:
                job.status = status
                job.cpu_ms = (ru.ru_utime + ru.ru_stime) * 1000
                job.maxrss_kb = ru.ru_maxrss
            k = self.kernel_pids.pop(pid, None)
            if k is not None:
                k.status = status
                self.kernel_died(k)

    def finish_ready(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.kernel is not None:
                continue
            if job.status is None or (job.fds and (job.drain_until is None
                                                   or now < job.drain_until)):
                if job.status is not None and job.drain_until is None:
                    # exited, but something it started still holds its pipes
                    job.drain_until = now + DRAIN_GRACE_S
                continue
            for fd in list(job.fds):
                self.unwatch(fd)
                posix.close(fd)
            job.fds.clear()
            if job.stdin_fd is not None:
                self.unwatch(job.stdin_fd)
                posix.close(job.stdin_fd)
                job.stdin_fd = None
            code = posix.waitstatus_to_exitcode(job.status)
            self.send_job(job, T_EXIT, dumps({
                "code": 128 - code if code < 0 else code, "timed_out": job.timed_out,
                "killed": job.killed, "out_total": job.total[T_OUT],
                "err_total": job.total[T_ERR], "cpu_ms": job.cpu_ms,
                "maxrss_kb": job.maxrss_kb}))
            del self.jobs[job.rid]

    def check_deadlines(self) -> float:
        now = time.monotonic()
        nxt = 3600.0
        for job in self.jobs.values():
            if not job.timed_out and now >= job.deadline:
                job.timed_out = True
                if job.kernel is not None:
                    self.kill_kernel(job.kernel)
                else:
                    self.kill_job(job)
            if not job.timed_out:
                nxt = min(nxt, job.deadline - now)
            if job.drain_until is not None:
                nxt = min(nxt, max(0.0, job.drain_until - now))
        return max(0.0, nxt)

    # -- kernels ------------------------------------------------------------------------------
    def start_cell(self, rid: int, req: dict[str, Any]) -> None:
        lang = str(req["lang"])
        job = Job(rid, int(req["cap"]), time.monotonic() + float(req["timeout_ms"]) / 1000)
        self.reap()  # a kernel killed since the last cell is noticed before this one
        k = self.kernels.get(lang)
        if k is not None and k.job is not None:
            self.cell_result(job, {"error": _err("KernelBusy", "a cell is already running")})
            return
        if k is None:
            job.restarted = lang in self.lost
            self.lost.discard(lang)
            try:
                k = self.spawn_kernel(lang)
            except (OSError, KeyError) as e:
                self.cell_result(job, {"error": _err(
                    "KernelUnavailable", f"cannot start the {lang} interpreter: {e}")})
                return
        job.kernel = k
        job.fds = {k.out_fd: T_OUT, k.err_fd: T_ERR}
        k.job = job
        self.jobs[rid] = job
        line = _json().dumps({"code": str(req["code"]), "value_cap": VALUE_CAP}).encode()
        try:
            posix.set_blocking(k.ctl_w, True)
            posix.write(k.ctl_w, line + b"\n")
        except OSError:
            self.kill_kernel(k)

    def spawn_kernel(self, lang: str) -> Kernel:
        argv = KERNELS[lang]
        env = {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape")
               for k, v in posix.environ.items()}
        ctl_r, ctl_w = posix.pipe2(posix.O_CLOEXEC)
        res_r, res_w = posix.pipe2(posix.O_CLOEXEC)
        (out_r, out_w), (err_r, err_w) = user_pipes(2)
        try:
            for fd in (ctl_r, res_w):  # passed on to the kernel; closed here right after
                posix.set_inheritable(fd, True)
            pid = spawn([*argv, str(ctl_r), str(res_w)], env, "/tmp", self.null, out_w, err_w)
        except OSError:
            _close(ctl_w, res_r, out_r, err_r)
            raise
        finally:
            _close(ctl_r, res_w, out_w, err_w)
        k = Kernel(lang, pid, out_r, err_r, ctl_w, res_r)
        for fd in (k.out_fd, k.err_fd, res_r):
            posix.set_blocking(fd, False)
        self.watch(k.out_fd, ("kout", k))
        self.watch(k.err_fd, ("kout", k))
        self.watch(res_r, ("kres", k))
        self.kernels[lang] = k
        self.kernel_pids[pid] = k
        return k

    def kernel_output(self, k: Kernel, fd: int) -> None:
        data = read_chunk(fd)
        if data is None:
            return
        if not data:
            self.unwatch(fd)
            return
        if k.job is not None:
            self.forward(k.job, T_OUT if fd == k.out_fd else T_ERR, data)
        # output between cells (a thread printing late) is dropped

    def kernel_result(self, k: Kernel) -> None:
        try:
            data = posix.read(k.res_r, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.unwatch(k.res_r)
            return
        k.res_buf += data
        if len(k.res_buf) > 4 * VALUE_CAP + MAX_PAYLOAD:
            self.kill_kernel(k)
            return
        while b"\n" in k.res_buf:
            line, _, rest = bytes(k.res_buf).partition(b"\n")
            k.res_buf = bytearray(rest)
            job = k.job
            if job is None:
                continue
            for fd in (k.out_fd, k.err_fd):  # the kernel flushed before answering
                while fd in self.tags:
                    before = job.total[T_OUT] + job.total[T_ERR]
                    self.kernel_output(k, fd)
                    if job.total[T_OUT] + job.total[T_ERR] == before:
                        break
            try:
                res = _json().loads(line)
            except ValueError:
                res = {"error": _err("KernelError", "the interpreter sent a malformed result")}
            k.job = None
            self.cell_result(job, res)

    def cell_result(self, job: Job, res: dict[str, Any]) -> None:
        res.update(out_total=job.total[T_OUT], err_total=job.total[T_ERR],
                   timed_out=job.timed_out)
        if job.restarted:
            res["restarted"] = True
        self.send_job(job, T_RESULT, fit_result(res, MAX_PAYLOAD - 256))
        self.jobs.pop(job.rid, None)

    def kill_kernel(self, k: Kernel) -> None:
        _killpg(k.pid)

    def kernel_died(self, k: Kernel) -> None:
        for fd in (k.out_fd, k.err_fd, k.res_r, k.ctl_w):
            self.unwatch(fd)
        job = k.job
        if job is not None:
            for fd in (k.out_fd, k.err_fd):
                try:
                    while (data := posix.read(fd, 65536)):
                        self.forward(job, T_OUT if fd == k.out_fd else T_ERR, data)
                except OSError:
                    pass
        _close(k.out_fd, k.err_fd, k.res_r, k.ctl_w)
        if self.kernels.get(k.lang) is k:
            del self.kernels[k.lang]
        if job is None:
            self.lost.add(k.lang)
        if job is not None:
            k.job = None
            code = posix.waitstatus_to_exitcode(k.status or 0)
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            msg = ("the cell timed out; the interpreter was killed and its state is lost"
                   if job.timed_out else
                   f"the {k.lang} interpreter died ({how}); its state is lost and a new "
                   "one starts with the next cell")
            self.cell_result(job, {"error": _err("KernelDied", msg), "restarted": True})

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        self.send(T_READY, 0, 0, dumps({"pid": posix.getpid(), "uid": posix.getuid(),
                                        "euid": posix.geteuid()}))
        while not self.stop:
            timeout = self.check_deadlines()
            for fd, _ in self.poll.poll(timeout * 1000):
                tag = self.tags.get(fd)
                if tag is None:        # unwatched by an earlier event of this round
                    continue
                if tag == "chan":
                    self.read_channel()
                elif tag == "wake":
                    try:
                        while posix.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif isinstance(tag, Job):
                    if fd in tag.fds:
                        self.pump(tag, fd)
                elif tag[0] == "stdin":
                    self.flush_stdin(tag[1])
                elif tag[0] == "kout":
                    self.kernel_output(tag[1], fd)
                elif tag[0] == "kres":
                    self.kernel_result(tag[1])
            self.reap()
            self.finish_ready()
        for job in self.jobs.values():
            self.kill_job(job)
        for k in list(self.kernels.values()):
            self.kill_kernel(k)


def fit_result(res: dict[str, Any], limit: int) -> bytes:
    """``res`` as JSON of at most ``limit`` bytes: the longest of the value, the error
    name, message and traceback is halved (a marker says how much was cut; a traceback keeps
    its end) until it fits. Any size and any encoding, never a malformed frame."""
    while True:
        data: bytes = _json().dumps(res).encode()
        if len(data) <= limit:
            return data
        err = res.get("error")
        spots = [(res, "value")]
        if isinstance(err, dict):
            spots += [(err, "name"), (err, "message"), (err, "traceback")]
        box, key = max(spots, key=lambda sp: len(str(sp[0].get(sp[1]) or "")))
        text = str(box.get(key) or "")
        if len(text) < 128:  # nothing big is left: only the counters remain
            data = _json().dumps({"error": _err("ResultTooLarge", "the cell's result could "
                                                "not be encoded")}).encode()
            return data
        keep = len(text) // 2
        mark = f" [closedpaw: {len(text) - keep} characters cut] "
        box[key] = mark + text[-keep:] if key == "traceback" else text[:keep] + mark


def _err(name: str, message: str) -> dict[str, str]:
    return {"name": name, "message": message, "traceback": ""}


if __name__ == "__main__":
    become_agent()  # before anything else: no request is read as uid 0
    Agent().run()
