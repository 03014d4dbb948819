"""The ClosedPaw in-sandbox agent: PID 1 of a long-lived sandbox.

Runs inside the sandbox as the sandbox user (uid 65534, no capabilities, the sandbox's seccomp
profile) with the image's own ``python3 -I -S``. It imports nothing of ClosedPaw: it is
bind-mounted read-only at ``/.closedpaw/cp_agent.py`` and speaks only the frame protocol on
its stdin (requests from the host) and stdout (replies). It

* starts each command directly (fork/exec with its own pipes, a new session, no shell),
* streams stdout/stderr in frames carrying the request id and a per-request sequence number,
* enforces each command's timeout (SIGKILL of its process group) and its output cap,
* reports the exit status, and reaps every zombie of the sandbox (it is init),
* drives persistent interpreters ("kernels") for stateful code cells.

Frame: a 16-byte big-endian header (type u8, flags u8, reserved u16, request id u32,
sequence u32, payload length u32) and at most ``MAX_PAYLOAD`` bytes of payload.
The host side is :mod:`closedpaw.sandbox.agent.channel`; the constants must match.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from typing import Any

HEADER = struct.Struct(">BBHIII")
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


def _hide_from_sandbox() -> None:
    """Make this process non-dumpable: its /proc/1/fd (the channel to the host) then belongs
    to root and no sandbox process, though it runs as the same uid, can open or ptrace it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass



def read_chunk(fd: int) -> bytes | None:
    """Up to 64 KiB from a non-blocking ``fd``: ``None`` when nothing is there yet, ``b""`` at
    end of file or on an error (the stream is over either way)."""
    try:
        return os.read(fd, 65536)
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


class Kernel:
    """A persistent interpreter: cells go in on a control pipe, results come back on another,
    the cell's prints arrive on the interpreter's own stdout/stderr pipes."""

    def __init__(self, lang: str, proc: subprocess.Popen[bytes], ctl_w: int, res_r: int) -> None:
        self.lang = lang
        self.proc = proc
        self.ctl_w = ctl_w
        self.res_r = res_r
        self.res_buf = bytearray()
        assert proc.stdout is not None and proc.stderr is not None
        self.out_fd = proc.stdout.fileno()
        self.err_fd = proc.stderr.fileno()
        self.job: Job | None = None
        self.status: int | None = None


class Agent:
    def __init__(self) -> None:
        self.inp = os.dup(0)
        self.out = os.dup(1)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        os.close(null)
        os.set_inheritable(self.inp, False)
        os.set_inheritable(self.out, False)
        os.set_blocking(self.inp, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.inp, selectors.EVENT_READ, "chan")
        wr, ww = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wr
        signal.set_wakeup_fd(ww)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.stop = False
        signal.signal(signal.SIGTERM, self._term)
        signal.signal(signal.SIGINT, self._term)
        self.sel.register(wr, selectors.EVENT_READ, "wake")
        self.buf = bytearray()
        self.jobs: dict[int, Job] = {}
        self.by_pid: dict[int, Job] = {}
        self.kernels: dict[str, Kernel] = {}
        self.kernel_pids: dict[int, Kernel] = {}

    def _term(self, *_: object) -> None:
        self.stop = True

    # -- channel ------------------------------------------------------------------------------
    def send(self, typ: int, rid: int, seq: int, payload: bytes = b"") -> None:
        data = HEADER.pack(typ, 0, 0, rid, seq, len(payload)) + payload
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.out, view)
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
                data = os.read(self.inp, 1 << 20)
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
            self.start_exec(rid, json.loads(payload))
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
            self.start_cell(rid, json.loads(payload))

    # -- commands -----------------------------------------------------------------------------
    def start_exec(self, rid: int, req: dict[str, Any]) -> None:
        job = Job(rid, int(req["cap"]), time.monotonic() + float(req["timeout_ms"]) / 1000)
        argv = [str(a) for a in req["argv"]]
        cwd = str(req["cwd"])
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if req.get("stdin") else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                env={str(k): str(v) for k, v in req["env"].items()},
                start_new_session=True, close_fds=True, bufsize=0)
        except OSError as e:
            if getattr(e, "filename", None) == cwd:
                why, code = "workdir", 126
            elif isinstance(e, FileNotFoundError):
                why, code = "not-found", 127
            elif isinstance(e, PermissionError):
                why, code = "permission", 126
            else:
                why, code = "exec-failed", 126
            self.send_job(job, T_EXIT, json.dumps(
                {"code": code, "spawn_error": why, "message": str(e.strerror or e)}).encode())
            return
        job.pid = proc.pid
        proc.returncode = 0  # we reap it ourselves (os.wait4); subprocess must never wait
        assert proc.stdout is not None and proc.stderr is not None
        for f, typ in ((proc.stdout, T_OUT), (proc.stderr, T_ERR)):
            fd = os.dup(f.fileno())
            f.close()
            os.set_blocking(fd, False)
            job.fds[fd] = typ
            self.sel.register(fd, selectors.EVENT_READ, job)
        if proc.stdin is not None:
            job.stdin_fd = os.dup(proc.stdin.fileno())
            proc.stdin.close()
            os.set_blocking(job.stdin_fd, False)
        self.jobs[rid] = job
        self.by_pid[job.pid] = job

    def flush_stdin(self, job: Job) -> None:
        fd = job.stdin_fd
        if fd is None:
            return
        try:
            while job.stdin_buf:
                n = os.write(fd, job.stdin_buf[:65536])
                del job.stdin_buf[:n]
        except BlockingIOError:
            pass
        except OSError:  # the command closed its stdin: drop the rest
            job.stdin_buf.clear()
        registered = fd in self.sel.get_map()
        if job.stdin_buf and not registered:
            self.sel.register(fd, selectors.EVENT_WRITE, ("stdin", job))
        elif not job.stdin_buf:
            if registered:
                self.sel.unregister(fd)
            if job.stdin_eof:
                os.close(fd)
                job.stdin_fd = None

    def pump(self, job: Job, fd: int) -> None:
        typ = job.fds[fd]
        data = read_chunk(fd)
        if data is None:
            return
        if not data:
            self.sel.unregister(fd)
            if job.kernel is None:
                os.close(fd)
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
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGKILL)
        if job.drain_until is None:
            job.drain_until = time.monotonic() + DRAIN_GRACE_S

    def reap(self) -> None:
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
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
                self.sel.unregister(fd)
                os.close(fd)
            job.fds.clear()
            if job.stdin_fd is not None:
                if job.stdin_fd in self.sel.get_map():
                    self.sel.unregister(job.stdin_fd)
                os.close(job.stdin_fd)
                job.stdin_fd = None
            code = os.waitstatus_to_exitcode(job.status)
            self.send_job(job, T_EXIT, json.dumps({
                "code": 128 - code if code < 0 else code, "timed_out": job.timed_out,
                "killed": job.killed, "out_total": job.total[T_OUT],
                "err_total": job.total[T_ERR], "cpu_ms": job.cpu_ms,
                "maxrss_kb": job.maxrss_kb}).encode())
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
        k = self.kernels.get(lang)
        if k is not None and k.job is not None:
            self.cell_result(job, {"error": _err("KernelBusy", "a cell is already running")})
            return
        if k is None:
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
        line = json.dumps({"code": str(req["code"]), "value_cap": VALUE_CAP}).encode() + b"\n"
        try:
            os.set_blocking(k.ctl_w, True)
            os.write(k.ctl_w, line)
        except OSError:
            self.kill_kernel(k)

    def spawn_kernel(self, lang: str) -> Kernel:
        argv = KERNELS[lang]
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                [*argv, str(ctl_r), str(res_w)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/tmp",
                env=dict(os.environ), start_new_session=True, close_fds=True,
                pass_fds=(ctl_r, res_w), bufsize=0)
        finally:
            os.close(ctl_r)
            os.close(res_w)
        proc.returncode = 0
        k = Kernel(lang, proc, ctl_w, res_r)
        for fd in (k.out_fd, k.err_fd, res_r):
            os.set_blocking(fd, False)
        self.sel.register(k.out_fd, selectors.EVENT_READ, ("kout", k))
        self.sel.register(k.err_fd, selectors.EVENT_READ, ("kout", k))
        self.sel.register(res_r, selectors.EVENT_READ, ("kres", k))
        self.kernels[lang] = k
        self.kernel_pids[proc.pid] = k
        return k

    def kernel_output(self, k: Kernel, fd: int) -> None:
        data = read_chunk(fd)
        if data is None:
            return
        if not data:
            if fd in self.sel.get_map():
                self.sel.unregister(fd)
            return
        if k.job is not None:
            self.forward(k.job, T_OUT if fd == k.out_fd else T_ERR, data)
        # output between cells (a thread printing late) is dropped

    def kernel_result(self, k: Kernel) -> None:
        try:
            data = os.read(k.res_r, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if k.res_r in self.sel.get_map():
                self.sel.unregister(k.res_r)
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
                while fd in self.sel.get_map():
                    before = job.total[T_OUT] + job.total[T_ERR]
                    self.kernel_output(k, fd)
                    if job.total[T_OUT] + job.total[T_ERR] == before:
                        break
            try:
                res = json.loads(line)
            except ValueError:
                res = {"error": _err("KernelError", "the interpreter sent a malformed result")}
            k.job = None
            self.cell_result(job, res)

    def cell_result(self, job: Job, res: dict[str, Any]) -> None:
        res.update(out_total=job.total[T_OUT], err_total=job.total[T_ERR],
                   timed_out=job.timed_out)
        self.send_job(job, T_RESULT, json.dumps(res).encode()[:MAX_PAYLOAD])
        self.jobs.pop(job.rid, None)

    def kill_kernel(self, k: Kernel) -> None:
        with contextlib.suppress(OSError):
            os.killpg(k.proc.pid, signal.SIGKILL)

    def kernel_died(self, k: Kernel) -> None:
        for fd in (k.out_fd, k.err_fd, k.res_r, k.ctl_w):
            if fd in self.sel.get_map():
                self.sel.unregister(fd)
        job = k.job
        if job is not None:
            for fd in (k.out_fd, k.err_fd):
                try:
                    while (data := os.read(fd, 65536)):
                        self.forward(job, T_OUT if fd == k.out_fd else T_ERR, data)
                except OSError:
                    pass
        for fd in (k.out_fd, k.err_fd, k.res_r, k.ctl_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.kernels.get(k.lang) is k:
            del self.kernels[k.lang]
        if job is not None:
            k.job = None
            code = os.waitstatus_to_exitcode(k.status or 0)
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            msg = ("the cell timed out; the interpreter was killed and its state is lost"
                   if job.timed_out else
                   f"the {k.lang} interpreter died ({how}); its state is lost and a new "
                   "one starts with the next cell")
            self.cell_result(job, {"error": _err("KernelDied", msg), "restarted": True})

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        _hide_from_sandbox()
        self.send(T_READY, 0, 0, json.dumps({"pid": os.getpid(), "uid": os.getuid()}).encode())
        while not self.stop:
            timeout = self.check_deadlines()
            for key, _ in self.sel.select(timeout):
                tag = key.data
                if tag == "chan":
                    self.read_channel()
                elif tag == "wake":
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif isinstance(tag, Job):
                    if key.fd in tag.fds:
                        self.pump(tag, int(key.fd))
                elif tag[0] == "stdin":
                    self.flush_stdin(tag[1])
                elif tag[0] == "kout":
                    self.kernel_output(tag[1], int(key.fd))
                elif tag[0] == "kres":
                    self.kernel_result(tag[1])
            self.reap()
            self.finish_ready()
        for job in self.jobs.values():
            self.kill_job(job)
        for k in list(self.kernels.values()):
            self.kill_kernel(k)


def _err(name: str, message: str) -> dict[str, str]:
    return {"name": name, "message": message, "traceback": ""}


if __name__ == "__main__":
    Agent().run()
