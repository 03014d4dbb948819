"""Protocol fuzzing of the agent channel from the sandbox side.

A hostile init runs inside a real runc/runsc container in place of the agent and writes
malformed, oversized, truncated, out-of-sequence or over-cap frames to the channel. The host
side must turn each into an AgentProtocolError naming the violation, with bounded memory,
never an exception escaping its reader thread, and the container is then killed and deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import time
from dataclasses import replace

import pytest

from closedpaw.errors import AgentProtocolError
from closedpaw.sandbox.agent.channel import (
    HEADER,
    MAX_PAYLOAD,
    T_EXEC,
    AgentChannel,
)
from closedpaw.sandbox.host.statedir import SandboxDir, new_sandbox_id
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

# The hostile program: sends READY (unless told not to), waits for one request, then does
# its attack. It speaks to the host through its stdout, like the real agent.
PRELUDE = f"""
import os, struct, sys, json, time
H = struct.Struct({HEADER.format!r})
def send(t, rid, seq, payload=b"", n=None):
    data = memoryview(H.pack(t, 0, 0, rid, seq, len(payload) if n is None else n) + payload)
    while data:  # pipes (gVisor's especially) take big writes in parts
        data = data[os.write(1, data):]
def ready():
    send(16, 0, 0, b"{{}}")
def request():
    head = os.read(0, H.size)
    t, _, _, rid, _, n = H.unpack(head)
    while n:
        n -= len(os.read(0, n))
    return rid
"""

ATTACKS = {
    "oversized": ("ready(); rid = request(); send(17, rid, 0, n=1 << 30); time.sleep(30)",
                  "oversized frame"),
    "bad-type": ("ready(); rid = request(); send(99, rid, 0, b'x'); time.sleep(30)",
                 "malformed frame header"),
    "truncated": ("ready(); rid = request(); os.write(1, H.pack(17, 0, 0, rid, 0, 100) + "
                  "b'short'); sys.exit(0)", "truncated frame"),
    "bad-sequence": ("ready(); rid = request(); send(17, rid, 0, b'a'); "
                     "send(17, rid, 5, b'b'); time.sleep(30)", "sequence 5, expected 1"),
    "unknown-request": ("ready(); rid = request(); send(17, rid + 7, 0, b'a'); "
                        "time.sleep(30)", "unknown request"),
    "over-cap": ("ready(); rid = request()\nfor i in range(100): send(17, rid, i, b'x' * 60000)"
                 "\ntime.sleep(30)", "more output than its cap"),
    "bad-json": ("ready(); rid = request(); send(19, rid, 0, b'{not json'); time.sleep(30)",
                 "not JSON"),
    "not-object": ("ready(); rid = request(); send(19, rid, 0, b'[1, 2]'); time.sleep(30)",
                   "not an object"),
    "garbage-first": ("os.write(1, os.urandom(4096)); time.sleep(30)", "frame"),
    "no-ready": ("send(17, 1, 0, b'x'); time.sleep(30)", "frame before READY"),
    "double-ready": ("ready(); ready(); time.sleep(30)", "unexpected READY"),
    "dies": ("ready(); rid = request(); sys.exit(3)", "closed its channel"),
    "flags": ("ready(); rid = request(); os.write(1, struct.pack('>BBHIII', 17, 1, 0, rid, 0,"
              " 0)); time.sleep(30)", "malformed frame header"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_agent_frames_end_the_sandbox(mgr: SandboxManager, runtime: str,
                                             attack: str) -> None:
    code, expected = ATTACKS[attack]
    driver = mgr.driver(runtime)
    spec = SandboxSpec(limits=ResourceLimits(memory_mb=128, disk_mb=8, timeout_s=60,
                                             output_cap_bytes=1 << 20))
    spec = replace(spec, code_files={"evil.py": PRELUDE + code + "\n"})
    sid = new_sandbox_id()
    sd = SandboxDir.allocate(mgr.settings, sid, spec, driver.features())
    broken: list[str] = []
    proc = None
    try:
        sd.build(["/usr/bin/python3", "-I", "-S", "/code/evil.py"], {}, "/tmp")
        proc = driver.run(sid, sd.bundle, stdin=True, log=sd.dir / "runtime.log")
        ch = AgentChannel(proc, sid, on_broken=broken.append)
        t0 = time.monotonic()
        with pytest.raises(AgentProtocolError) as info:
            ch.wait_ready(20)
            req = ch.open(T_EXEC, {"argv": ["x"]}, cap=256 * 1024)
            while True:  # valid frames before the attack are delivered; then it must break
                ev = req.events.get(timeout=20)
                if ev.kind == "broken":
                    raise AgentProtocolError(str((ev.info or {})["reason"]))
                if ev.kind not in ("stdout", "stderr"):
                    raise AssertionError(f"the host accepted {ev.kind} {ev.info}")
        assert expected in str(info.value), str(info.value)
        assert (broken and expected in broken[0]) or attack == "garbage-first"
        assert time.monotonic() - t0 < 20  # detected at once, not by a timeout
        assert ch.broken is not None
        # never more than one frame past the cap was read (and that one was not delivered)
        assert all(r.got[17] <= r.cap + MAX_PAYLOAD for r in ch._reqs.values())
        with pytest.raises(AgentProtocolError):
            ch.open(T_EXEC, {"argv": ["x"]}, cap=1)
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                driver.kill(sid, "KILL", all_processes=True)
            driver.delete(sid)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        sd.teardown()


def test_frame_cap_is_the_agents_cap() -> None:
    """The agent's constants are the channel's (the agent imports nothing of ClosedPaw)."""
    from closedpaw.sandbox.agent import channel
    from closedpaw.sandbox.agent.inside import cp_agent

    assert cp_agent.HEADER.format == channel.HEADER.format
    assert cp_agent.MAX_PAYLOAD == MAX_PAYLOAD
    for name in ("T_EXEC", "T_STDIN", "T_KILL", "T_CELL", "T_READY", "T_OUT", "T_ERR",
                 "T_EXIT", "T_RESULT"):
        assert getattr(cp_agent, name) == getattr(channel, name), name
    assert struct.calcsize(HEADER.format) == 16
