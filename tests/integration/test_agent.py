"""The in-sandbox agent on real runc and runsc: exec through it, stateful cells, streaming,
per-exec usage, and what a hostile process inside the sandbox can (not) do to the channel."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from closedpaw.errors import AgentProtocolError, SandboxError, SpecError
from closedpaw.sandbox.images.store import Image
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.result import CodeResult
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

SMALL = ResourceLimits(memory_mb=256, disk_mb=16, timeout_s=60, output_cap_bytes=4096)


def test_exec_goes_through_the_agent(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        assert sb.agent
        r = sb.exec(["/bin/echo", "hi"])
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"hi\n", b"")
        assert r.isolation.runtime == runtime and r.isolation.user == "65534:65534"
        assert sb.exec(["cat"], stdin=b"x" * 300_000).stdout_total_bytes == 300_000
        assert sb.exec(["sh", "-c", "exit 7"]).exit_code == 7
        r = sb.exec(["sh", "-c", "kill -TERM $$"])
        assert r.exit_code == 128 + signal.SIGTERM
        r = sb.exec(["no-such-program"])
        assert r.exit_code == 127 and b"command not found" in r.stderr
        with pytest.raises(SpecError, match="workdir"):
            sb.exec(["true"], workdir="/nonexistent")
        r = sb.exec(["sh", "-c", "echo $FOO; pwd"], env={"FOO": "bar"}, workdir="/tmp")
        assert r.stdout == b"bar\n/tmp\n"


def test_agent_is_an_unprivileged_init_that_reaps(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        status = sb.exec(["python3", "-c", "print(open('/proc/1/status').read())"]).stdout_text
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        # real 65534 (what its commands become), effective/saved/fs: the agent's own uid
        assert fields["Uid"].split() == ["65534", "65533", "65533", "65533"]
        assert fields["Gid"].split() == ["65534", "65533", "65533", "65533"]
        assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapPrm"].strip(), 16) == 0
        # it started with CAP_SETUID/CAP_SETGID (bits 7, 6) in its bounding set; nothing can
        # raise them again (no uid 0, no new privileges)
        assert int(fields["CapBnd"].strip(), 16) & ~0xC0 == 0
        if runtime == "runc":  # gVisor does not report its filter here
            assert fields["Seccomp"].strip() == "2"  # filter mode
        cmd = sb.exec(["cat", "/proc/1/cmdline"]).stdout.split(b"\0")
        assert b"/.closedpaw/cp_agent.py" in cmd
        # orphans re-parented to the agent are reaped: no zombie survives
        sb.exec(["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.01 &) ; done"])
        time.sleep(0.5)
        ps = sb.exec(["python3", "-c", "import os\nfor p in os.listdir('/proc'):\n"
                      " if p.isdigit():\n  s=open(f'/proc/{p}/stat').read()\n"
                      "  print(s.rsplit(')',1)[1].split()[0])"]).stdout_text.split()
        assert "Z" not in ps, ps
        # the agent's files are read-only in the sandbox
        w = sb.exec(["sh", "-c", "echo x > /.closedpaw/cp_agent.py"])
        assert w.exit_code != 0


def test_timeout_kills_only_that_command_and_caps_hold(mgr: SandboxManager,
                                                      runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        t0 = time.monotonic()
        r = sb.exec(["sh", "-c", "sleep 30 & sleep 30"], timeout_s=0.5)
        assert r.timed_out and r.exit_code == 137 and time.monotonic() - t0 < 10
        r = sb.exec(["python3", "-c", "import sys; sys.stdout.write('a'*100000); "
                     "sys.stderr.write('b'*10)"])
        assert r.stdout == b"a" * 4096 and r.stdout_truncated and r.stdout_total_bytes == 100000
        assert r.stderr == b"b" * 10 and not r.stderr_truncated
        assert sb.exec(["true"]).ok and sb.refresh_status() is SandboxStatus.RUNNING


def test_per_exec_resource_usage(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        big = sb.exec(["python3", "-c", "b = bytearray(96 << 20); sum(range(3_000_000))"])
        small = sb.exec(["true"])
        assert big.ok and small.ok
        assert big.usage.cpu_time_ms is not None and small.usage.cpu_time_ms is not None
        assert big.usage.cpu_time_ms > small.usage.cpu_time_ms
        assert big.usage.peak_memory_bytes is not None and small.usage.peak_memory_bytes
        assert big.usage.peak_memory_bytes > 96 << 20
        if runtime == "runc":  # the reset before each exec makes the peak per exec
            assert small.usage.peak_memory_bytes < big.usage.peak_memory_bytes - (64 << 20)
        total = sb.usage()
        assert total.cpu_time_ms is not None and total.cpu_time_ms >= big.usage.cpu_time_ms


def test_python_cells_keep_state(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        r = sb.code.run("x = 1")
        assert isinstance(r, CodeResult) and r.ok and r.value is None
        r = sb.code.run("print(x + 1)\nx * 10")
        assert (r.stdout, r.value, r.error) == (b"2\n", "10", None)
        r = sb.code.run("import sys; print('e', file=sys.stderr); def f():\n    1/0", )
        assert r.error is not None and r.error.name == "SyntaxError" and r.exit_code == 1
        r = sb.code.run("def f():\n    return 1/0\nf()")
        assert r.error is not None and r.error.name == "ZeroDivisionError"
        assert 'File "<cell' in r.error.traceback and "cp_pykernel" not in r.error.traceback
        assert sb.code.run("python", "x").value == "1"  # the issue-3 form, same kernel
        assert sb.code.run("x").value == "1"  # state survives errors
        r = sb.code.run("import os; os.kill(os.getpid(), 9)")
        assert r.restarted and r.error is not None and r.error.name == "KernelDied"
        r = sb.code.run("x")
        assert r.error is not None and r.error.name == "NameError"  # a fresh interpreter
        r = sb.code.run("while True: pass", timeout_s=1)
        assert r.timed_out and r.restarted and r.exit_code == 137
        assert sb.code.run("2 + 2").value == "4"
        r = sb.code.run("print('z' * 10000)")
        assert r.stdout_truncated and len(r.stdout) == 4096



def test_a_cell_that_forks_is_answered_by_the_kernel(mgr: SandboxManager, runtime: str) -> None:
    """A python cell that forks: the child ends with the cell, as at the end of a
    ``python3 -c`` script, and the kernel answers (an outsider's attack: the child answered
    the cell, ``pid 0``, the kernel's answer was lost, and the child read the next cells)."""
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        assert sb.code.run("import os\nx, kernel = 41, os.getpid()").ok
        r = sb.code.run("pid = os.fork()\nif pid: os.waitpid(pid, 0)\n"
                        "print('child' if pid == 0 else 'parent')\npid > 0")
        assert r.error is None and r.value == "True", r
        assert sorted(r.stdout.decode().split()) == ["child", "parent"], r.stdout
        assert sb.code.run("x + 1").value == "42"   # the same kernel, its state kept
        for _ in range(3):   # and nothing else reads the cells
            assert sb.code.run("os.getpid() == kernel").value == "True"

def test_node_cells_keep_state(mgr: SandboxManager, runtime: str,
                               built_images: dict[str, Image]) -> None:
    with mgr.create(SandboxSpec(image="multi", limits=SMALL), runtime=runtime) as sb:
        assert sb.agent
        assert sb.code.run("node", "var x = 20; let y = 1").ok
        r = sb.code.run("node", "console.log('hi', x); x + 1")
        assert (r.stdout, r.value) == (b"hi 20\n", "21")
        r = sb.code.run("node", "null.f")
        assert r.error is not None and r.error.name == "TypeError" and "<cell" in \
            r.error.traceback
        r = sb.code.run("node", "process.exit(4)")
        assert r.restarted and r.error is not None and r.error.name == "KernelDied"
        r = sb.code.run("node", "typeof x")
        assert r.value == "'undefined'"


def test_images_without_python_keep_the_exec_path(mgr: SandboxManager, runtime: str,
                                                  built_images: dict[str, Image]) -> None:
    with mgr.create(SandboxSpec(image="node", limits=SMALL), runtime=runtime) as sb:
        assert not sb.agent
        assert sb.exec(["node", "-e", "console.log(1)"]).stdout == b"1\n"
        with pytest.raises(SpecError, match="agent"):
            sb.code.run("node", "1", stateful=True)
        with pytest.raises(SandboxError, match="no agent"):
            sb.stream(["true"])


def test_streaming_yields_chunks_as_they_come(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        code = "import time,sys\nfor i in range(3):\n print(i, flush=True); time.sleep(0.3)"
        seen: list[tuple[float, bytes]] = []
        t0 = time.monotonic()
        st = sb.stream(["python3", "-c", code])
        for name, data in st:
            assert name == "stdout"
            seen.append((time.monotonic() - t0, data))
        assert st.result is not None and st.result.stdout == b"0\n1\n2\n"
        assert len(seen) == 3 and seen[1][0] - seen[0][0] > 0.2  # not buffered to the end

        async def consume() -> list[bytes]:
            return [d async for _, d in sb.stream(["sh", "-c", "echo a; sleep 0.2; echo b"])]
        assert b"".join(asyncio.run(consume())) == b"a\nb\n"
        # leaving a stream early kills the command
        with sb.stream(["sh", "-c", "echo first; sleep 60"]) as st2:
            assert next(iter(st2)) == ("stdout", b"first\n")
        assert st2.result is not None and st2.result.exit_code == 137
        sunk: list[bytes] = []
        sb.exec(["echo", "s"], sink=lambda _n, d: sunk.append(d))
        assert sunk == [b"s\n"]


def test_sandbox_processes_cannot_reach_the_channel(mgr: SandboxManager, runtime: str) -> None:
    """runc: the agent is non-dumpable, so its fds (the channel) are closed to sandbox
    processes though they run as the same uid, and as init it ignores their signals.
    runsc (this release) lets a same-uid process reach /proc/1/fd: the garbage is then caught
    by the host, which ends that sandbox (AgentProtocolError) and nothing else."""
    hostile = ["python3", "-c",
               "import os\nfor fd in (0, 1, 2):\n try:\n"
               "  f = os.open(f'/proc/1/fd/{fd}', os.O_WRONLY)\n"
               "  os.write(f, b'\\xff' * 64)\n  print('open', fd)\n"
               " except OSError as e:\n  print('denied', fd, e.errno)\n"
               "os.kill(1, 9)"]
    with mgr.create(SandboxSpec(limits=SMALL), runtime=runtime) as sb:
        if runtime == "runc":
            r = sb.exec(hostile)
            assert "open" not in r.stdout_text, r.stdout_text
            assert sb.exec(["true"]).ok and sb.refresh_status() is SandboxStatus.RUNNING
            return
        try:
            sb.exec(hostile)
            sb.exec(["true"])
        except AgentProtocolError:
            assert sb.status is SandboxStatus.ERROR
        else:
            assert sb.refresh_status() is SandboxStatus.RUNNING


def test_a_dead_agent_ends_the_sandbox_not_the_host(mgr: SandboxManager, runtime: str) -> None:
    sb = mgr.create(SandboxSpec(limits=SMALL), runtime=runtime)
    try:
        assert sb.exec(["true"]).ok
        # runc: the host pid of the container's init (the agent); runsc: the sandbox
        pid = sb.driver.state_pid(sb.id)  # type: ignore[attr-defined]
        assert pid
        st = sb.stream(["sleep", "60"])
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(AgentProtocolError, match="channel"):
            st.drain()
        with pytest.raises(SandboxError):
            sb.exec(["true"])
        assert sb.status is SandboxStatus.ERROR
    finally:
        sb.delete()
