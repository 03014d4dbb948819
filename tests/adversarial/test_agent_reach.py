"""The agent out of reach of its commands (issue 15, finding 4), on both runtimes.

A background process left behind by one command attacks the in-sandbox agent (PID 1) while
later commands run: it lists and opens every ``/proc/1/fd/N`` for reading and writing (the
channel to the host is there), writes forged frames into whatever it opened, opens
``/proc/1/mem``, tries ``ptrace``, and reads the stdin pipe of every other process it can
open. Under runsc, PR_SET_DUMPABLE alone did not protect ``/proc/1/fd`` (this gVisor does not
apply ptrace checks there); now the agent runs as its own uid, so what this gVisor does check
(the owner of each pipe) keeps the channel and every stdin pipe out of reach too.

Not claimed (see docs/sandbox-identity.md): the stdout/stderr pipes of a command belong to
the sandbox user, so that commands can reopen ``/dev/stdout``; any process of the sandbox user
can reach them, as on any Linux system.
"""

from __future__ import annotations

import hashlib
import json

from adversarial_support import wait_until

from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

SMALL = SandboxSpec(limits=ResourceLimits(memory_mb=256, timeout_s=60))

ATTACK = r"""
import ctypes, errno, json, os, stat, struct, time
me, uid = os.getpid(), os.getuid()
libc = ctypes.CDLL(None, use_errno=True)
# a forged EXIT frame for each of the next request ids, and a READY
forged = b"".join(struct.pack(">BBHIII", 19, 0, 0, rid, 0, 13) + b'{"code": 0}  '
                  for rid in range(1, 40)) + struct.pack(">BBHIII", 16, 0, 0, 0, 0, 2) + b"{}"
report = {"listdir": None, "opened": {}, "mem": None, "ptrace": None, "loot": "",
          "forged_writes": 0, "stdin_opened": []}
try:
    report["listdir"] = sorted(os.listdir("/proc/1/fd"))
except OSError as e:
    report["listdir"] = errno.errorcode[e.errno]
try:
    os.close(os.open("/proc/1/mem", os.O_RDONLY)); report["mem"] = "OPENED"
except OSError as e:
    report["mem"] = errno.errorcode[e.errno]
ctypes.set_errno(0)
r = libc.ptrace(16, 1, 0, 0)             # PTRACE_ATTACH
report["ptrace"] = "ATTACHED" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
loot = bytearray()
open("/tmp/started", "w").close()
end = time.monotonic() + float(os.environ["ATTACK_S"])
while time.monotonic() < end and not os.path.exists("/tmp/stop"):
    for n in range(64):
        for flags in (os.O_RDONLY, os.O_WRONLY):
            try:
                fd = os.open(f"/proc/1/fd/{n}", flags | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            st = os.fstat(fd)
            kind = "fifo" if stat.S_ISFIFO(st.st_mode) else "chr" if stat.S_ISCHR(
                st.st_mode) else "other"
            report["opened"][f"{n}/{flags}"] = [kind, st.st_uid]
            if kind == "other" or (kind == "fifo" and st.st_uid != uid):
                # not /dev/null, nor a pipe of the sandbox user: the agent's own
                try:
                    if flags == os.O_WRONLY:
                        os.write(fd, forged); report["forged_writes"] += 1
                    else:
                        loot += os.read(fd, 65536)
                except OSError:
                    pass
            os.close(fd)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in (me, 1):
            continue
        try:                                     # another process's stdin
            fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                report["stdin_opened"].append(pid)
                loot += os.read(fd, 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
    time.sleep(0.005)
report["loot"] = loot.decode("latin-1")
with open("/tmp/report.json", "w") as f:
    json.dump(report, f)
"""


def test_a_background_process_cannot_reach_the_agent(mgr: SandboxManager,
                                                      runtime: str) -> None:
    with mgr.create(SMALL, runtime=runtime) as sb:
        assert sb.agent
        start = sb.exec(["sh", "-c", 'ATTACK_S=60 python3 -c "$0" > /tmp/attack.log 2>&1 &',
                         ATTACK])
        assert start.exit_code == 0
        assert wait_until(lambda: sb.exec(["test", "-e", "/tmp/started"]).exit_code == 0, 20)
        secrets = []
        for i in range(8):
            secret = f"stdin-secret-{i}-".encode() * 200
            env_secret = f"env-secret-{i}"
            secrets += [secret[:20], env_secret.encode()]
            r = sb.exec(["sh", "-c", 'sleep 0.3; echo "$SECRET" >&2; sha256sum'],
                        stdin=secret, env={"SECRET": env_secret})
            # genuine results: the real exit code, the digest of exactly what was sent
            assert r.exit_code == 0, r
            assert r.stdout_text.split()[0] == hashlib.sha256(secret).hexdigest()
            assert r.stderr_text == env_secret + "\n"
            code = sb.code.run(f"'cell-{i}-' + str(6 * 7)")
            assert code.value == f"'cell-{i}-42'"
        assert sb.exec(["touch", "/tmp/stop"]).exit_code == 0
        assert wait_until(lambda: sb.exec(["test", "-s", "/tmp/report.json"]).exit_code == 0,
                          20), sb.exec(["cat", "/tmp/attack.log"]).stdout_text
        report = json.loads(sb.exec(["cat", "/tmp/report.json"]).stdout)
        assert sb.exec(["true"]).exit_code == 0          # the sandbox and its channel live on
    assert report["mem"] != "OPENED" and report["ptrace"] != "ATTACHED", report
    assert report["forged_writes"] == 0, report
    assert report["stdin_opened"] == [], report
    loot = report["loot"].encode("latin-1")
    assert not any(s in loot for s in secrets), loot[:500]
    # nothing of the agent but /dev/null and the command pipes of the sandbox user itself
    for what, (kind, owner) in report["opened"].items():
        assert kind == "chr" or (kind == "fifo" and owner == 65534), (what, kind, owner)
    if runtime == "runc":
        # the kernel's ptrace check on a process of another uid: the directory is closed
        assert report["listdir"] == "EACCES" and report["opened"] == {}, report
