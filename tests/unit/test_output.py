"""The output pump on real host pipes (no sandbox involved)."""

import subprocess
import sys
import time

from closedpaw.sandbox.host.output import pump


def _proc(code: str, stdin: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def test_caps_each_stream_and_counts_everything() -> None:
    p = _proc("import sys; sys.stdout.write('a'*300000); sys.stderr.write('b'*10)")
    c = pump(p, cap=1000, deadline=time.monotonic() + 30, on_timeout=p.kill)
    p.wait()
    assert c.stdout == b"a" * 1000 and c.stdout_truncated and c.stdout_total == 300000
    assert c.stderr == b"b" * 10 and not c.stderr_truncated and not c.timed_out


def test_feeds_stdin_larger_than_a_pipe() -> None:
    data = b"x" * 1_000_000
    p = _proc("import sys; d=sys.stdin.buffer.read(); print(len(d))", stdin=True)
    c = pump(p, cap=100, deadline=time.monotonic() + 30, on_timeout=p.kill, stdin_data=data)
    p.wait()
    assert c.stdout.strip() == b"1000000"


def test_deadline_calls_on_timeout_once() -> None:
    calls = []
    p = _proc("import time; time.sleep(30)")

    def kill() -> None:
        calls.append(1)
        p.kill()
    c = pump(p, cap=100, deadline=time.monotonic() + 0.2, on_timeout=kill)
    p.wait()
    assert c.timed_out and calls == [1]


def test_sink_sees_only_capped_bytes() -> None:
    seen: list[tuple[str, bytes]] = []
    p = _proc("print('x'*50)")
    pump(p, cap=10, deadline=time.monotonic() + 30, on_timeout=p.kill,
         sink=lambda n, b: seen.append((n, b)))
    p.wait()
    assert b"".join(b for n, b in seen if n == "stdout") == b"x" * 10
