"""One host identity per sandbox (issue 15, finding 6). Every runc sandbox is a user namespace
of its own, mapped onto a host uid/gid range nobody else uses and created by that range's
first uid, so per-user kernel limits, signals and /proc access are no longer shared with other
sandboxes or with host processes running as nobody, and host uevents no longer arrive.

Under runsc the OCI uid mappings are not applied (gVisor keeps its own user namespace; the
Sentry runs as host 65534): the stamp says so, and gVisor's own kernel emulates inotify,
mqueues and netlink inside each sandbox.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adversarial_support import probe_argv, wait_until

from closedpaw.sandbox.host.userns import in_use
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.sandbox import Sandbox
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

SMALL = SandboxSpec(limits=ResourceLimits(memory_mb=128, timeout_s=30))


def _host_uid(sb: Sandbox) -> int:
    iso = sb.exec(["true"]).isolation
    assert iso.user_namespace and iso.host_uids, iso
    return int(iso.host_uids.split("-")[0]) + 65534


def _host_pids(sb: Sandbox) -> list[int]:
    """Host pids of the sandbox's processes (found by its cgroup)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cgroup") as f:
                    if f"/{sb.id}/" in f.read():
                        out.append(int(name))
            except OSError:
                continue
    return out


def _real_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("Uid:"))
    return int(line.split()[1])


@pytest.fixture
def two(mgr: SandboxManager) -> Iterator[tuple[Sandbox, Sandbox]]:
    with mgr.create(SMALL, runtime="runc") as a, mgr.create(SMALL, runtime="runc") as b:
        yield a, b


def test_each_runc_sandbox_has_a_host_uid_range_of_its_own(
        mgr: SandboxManager, two: tuple[Sandbox, Sandbox]) -> None:
    a, b = two
    ua, ub = _host_uid(a), _host_uid(b)
    assert ua != ub and abs(ua - ub) >= 65536
    for sb, uid in ((a, ua), (b, ub)):
        inside = sb.exec(["sh", "-c", "id -u; cat /proc/self/uid_map"]).stdout_text.split()
        assert inside[0] == "65534"                        # inside, still the sandbox user
        assert inside[1:] == ["0", str(uid - 65534), "65536"]
        sb.exec(["sh", "-c", "sleep 30 & exit 0"])
        pids = _host_pids(sb)
        # the agent and its commands: all of this sandbox's host uid
        assert len(pids) >= 2 and {_real_uid(p) for p in pids} == {uid}
    owners = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            uid = _real_uid(int(name))
            with open(f"/proc/{name}/cgroup") as f:
                cg = f.read()
        except (OSError, StopIteration):
            continue
        for sb, u in ((a, ua), (b, ub)):
            if u - 65534 <= uid <= u + 1:
                owners.setdefault(sb.id, set()).add(sb.id in cg)
    assert owners == {a.id: {True}, b.id: {True}}
    # each range is recorded for its sandbox, and freed when the sandbox goes
    def holders() -> set[str]:
        return {Path(o).name for o in in_use(mgr.settings).values()}
    assert {a.id, b.id} <= holders()
    a.delete()
    assert wait_until(lambda: a.id not in holders(), 20) and b.id in holders()


HOLD_INOTIFY = """
import os, sys, ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while True:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        break
    held.append(fd)
print(len(held), err, flush=True)
if sys.argv[1] == "hold":
    time.sleep(60)
"""


def _inotify(sb: Sandbox, hold: bool) -> tuple[int, int]:
    if hold:
        sb.exec(["sh", "-c", 'python3 -c "$0" hold > /tmp/held 2>&1 &', HOLD_INOTIFY])
        assert wait_until(lambda: sb.exec(["cat", "/tmp/held"]).stdout.strip() != b"", 20)
        out = sb.exec(["cat", "/tmp/held"]).stdout_text.split()
    else:
        out = sb.exec(["python3", "-c", HOLD_INOTIFY, "once"]).stdout_text.split()
    return int(out[0]), int(out[1])


def _host_nobody_inotify() -> bool:
    p = subprocess.run([sys.executable, "-c", "import ctypes, os; "
                        "print(ctypes.CDLL(None).inotify_init1(os.O_CLOEXEC))"],
                       user=65534, group=65534, extra_groups=[], capture_output=True,
                       timeout=30, check=True)
    return int(p.stdout) >= 0


def test_one_sandbox_holding_every_inotify_instance_starves_nobody_else(
        two: tuple[Sandbox, Sandbox]) -> None:
    with open("/proc/sys/fs/inotify/max_user_instances") as f:
        limit = int(f.read())
    a, b = two
    held, err = _inotify(a, hold=True)
    assert err == 24 and 0 < held <= limit          # EMFILE: a reached its own limit
    got, _ = _inotify(b, hold=False)
    assert got == limit, f"sandbox b got {got} of {limit} inotify instances"
    assert _host_nobody_inotify(), "a host process running as nobody got no inotify instance"


HOLD_MQUEUE = """
import ctypes, os, sys, time
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]
rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Attr)]
n = 0
while n < 200:
    a = Attr(0, 10, 8192, 0)
    if rt.mq_open(f"/q{n}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(a)) < 0:
        err = ctypes.get_errno()
        break
    n += 1
else:
    err = 0
print(n, err, flush=True)
if sys.argv[1] == "hold":
    time.sleep(60)
"""


def test_one_sandbox_exhausting_message_queues_leaves_the_other_its_own(
        two: tuple[Sandbox, Sandbox]) -> None:
    a, b = two
    a.exec(["sh", "-c", 'python3 -c "$0" hold > /tmp/held 2>&1 &', HOLD_MQUEUE])
    assert wait_until(lambda: a.exec(["cat", "/tmp/held"]).stdout.strip() != b"", 20)
    held, err = map(int, a.exec(["cat", "/tmp/held"]).stdout_text.split())
    assert held > 0 and err == 24, (held, err)      # EMFILE: RLIMIT_MSGQUEUE reached
    got, err_b = map(int, b.exec(["python3", "-c", HOLD_MQUEUE, "once"]).stdout_text.split())
    assert got == held and err_b == 24, (got, held)


def test_a_host_process_running_as_nobody_cannot_signal_or_read_a_sandbox(
        two: tuple[Sandbox, Sandbox]) -> None:
    a, _ = two
    a.exec(["sh", "-c", "SECRET=s3cr3t-env sleep 60 > /dev/null 2>&1 &"])
    pid = next(p for p in _host_pids(a)
               if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep"))
    attack = ("import os, json\n"
              f"pid = {pid}\nres = {{}}\n"
              "for name, fn in (('kill', lambda: os.kill(pid, 0)),\n"
              "                 ('environ', lambda: open(f'/proc/{pid}/environ').read()),\n"
              "                 ('fd', lambda: os.listdir(f'/proc/{pid}/fd'))):\n"
              "    try:\n        fn(); res[name] = 'allowed'\n"
              "    except OSError as e:\n        res[name] = e.errno\n"
              "print(json.dumps(res))\n")
    p = subprocess.run([sys.executable, "-c", attack], user=65534, group=65534,
                       extra_groups=[], capture_output=True, timeout=30, check=True)
    res = json.loads(p.stdout)
    assert res == {"kill": 1, "environ": 13, "fd": 13}, res   # EPERM, EACCES, EACCES
    # and the host process is invisible from the sandbox (its own pid namespace)
    host = subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[])
    try:
        seen = a.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]).stdout_text
        assert "sleep 60" in seen and seen.count("sleep 60") == 1   # only its own sleep
        r = a.exec(["sh", "-c", f"kill -0 {host.pid}"])
        assert r.exit_code != 0
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()


UEVENT_LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)   # NETLINK_KOBJECT_UEVENT
s.bind((0, 1))
s.settimeout(0.2)
print("listening", flush=True)
got = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        got.append(s.recv(65536))
    except socket.timeout:
        pass
print("received", len(got), flush=True)
"""
UEVENT_FILE = "/sys/devices/virtual/mem/full/uevent"


def test_host_uevents_do_not_reach_a_sandbox(mgr: SandboxManager, runtime: str) -> None:
    """A kobject uevent triggered on the host (a "change" of /dev/full) reaches a listener
    on the host (the control: the trigger works) but never one in the sandbox: under runc
    the sandbox's network namespace belongs to its own user namespace, which the kernel does
    not broadcast to; under runsc gVisor refuses or answers such sockets itself."""
    host = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
    host.bind((0, 1))
    host.settimeout(5)
    with host, mgr.create(SMALL, runtime=runtime) as sb:
        sb.exec(["sh", "-c", 'python3 -c "$0" 6 > /tmp/ue 2>&1 &', UEVENT_LISTEN])
        assert wait_until(lambda: sb.exec(["cat", "/tmp/ue"]).stdout != b"", 20)
        listening = sb.exec(["cat", "/tmp/ue"]).stdout_text
        for _ in range(3):
            with open(UEVENT_FILE, "w") as f:
                f.write("change")
        assert b"mem/full" in host.recv(65536)             # the host did get it
        assert wait_until(lambda: "received" in sb.exec(["cat", "/tmp/ue"]).stdout_text
                          or "Error" in sb.exec(["cat", "/tmp/ue"]).stdout_text, 20)
        out = sb.exec(["cat", "/tmp/ue"]).stdout_text
    if runtime == "runc":
        # two layers, either holds: the socket-family filter refuses kobject-uevent netlink
        # sockets (EPERM), and a listener that got one anyway would sit in a network
        # namespace of the sandbox's own user namespace, which the kernel does not reach
        assert ("PermissionError" in out
                or (listening.startswith("listening") and "received 0" in out)), out
    else:  # refused by gVisor, or a socket that never hears from the host
        assert "received 0" in out or "Error" in out, out


def test_the_stamp_says_whether_a_sandbox_has_its_own_user_namespace(
        mgr: SandboxManager, runtime: str) -> None:
    r = mgr.run(probe_argv("print(open('/proc/self/uid_map').read().split())"), SMALL,
                runtime=runtime)
    iso = r.isolation
    if runtime == "runc":
        assert iso.user_namespace and "user" in iso.namespaces
        lo, hi = map(int, iso.host_uids.split("-"))
        assert hi - lo == 65535 and lo >= mgr.settings.sandbox.userns_base
        assert f"'0', '{lo}', '65536'" in r.stdout_text
    else:
        assert not iso.user_namespace and iso.host_uids == ""
    d = iso.to_dict()
    assert d["user_namespace"] is iso.user_namespace and d["host_uids"] == iso.host_uids


def test_gc_frees_the_range_of_a_sandbox_whose_state_is_gone(mgr: SandboxManager) -> None:
    d = mgr.settings.sandbox.userns_dir
    d.mkdir(parents=True, exist_ok=True)
    rec = d / str(mgr.settings.sandbox.userns_slots - 1)
    if rec.exists():
        pytest.fail(f"{rec} is in use by another run; cannot test gc on it", pytrace=False)
    rec.write_text(f"{mgr.settings.state_dir}/sandboxes/cp-000000000000\n")
    try:
        with mgr.create(SMALL, runtime="runc") as sb:   # a live one is left alone
            report = mgr.gc()
            assert not rec.exists()
            assert any("host uid range" in line for line in report.details)
            assert sb.id in {Path(o).name for o in in_use(mgr.settings).values()}
    finally:
        rec.unlink(missing_ok=True)


def test_a_state_dir_others_cannot_search_gets_no_namespace_and_says_so(
        mgr: SandboxManager, tmp_path: Path) -> None:
    """runc's init runs as the namespace's root and must reach the state dir; under pytest's
    0700 tmp it cannot, so the sandbox runs without one and the stamp and doctor say so."""
    from closedpaw.sandbox.doctor import _userns
    from closedpaw.sandbox.host import inventory
    from closedpaw.settings import Settings

    s = Settings.of(state_dir=tmp_path / "state", data_dir=mgr.settings.data_dir,
                    cgroup_parent=mgr.settings.sandbox.cgroup_parent)
    assert os.stat(tmp_path.parent.parent).st_mode & 0o001 == 0   # pytest's 0700 dir
    with SandboxManager(s) as m:
        r = m.run(["id", "-u"], SMALL, runtime="runc")
        m.reaper.drain()
    assert r.exit_code == 0 and r.stdout == b"65534\n"
    assert not r.isolation.user_namespace and r.isolation.host_uids == ""
    why = _userns("runc", s)
    assert why["own"] is False and "state dir" in why["why"]
    assert inventory.take(s).lines() == []
