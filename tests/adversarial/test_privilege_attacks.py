"""Privilege attacks: what the sandboxed process is (uid, capabilities, no_new_privs,
seccomp), the masked and read-only parts of /proc and /sys, and the syscalls that could
widen its view or escape: mount, unshare, setns, ptrace, bpf, keyctl, chroot, setuid(0)...

Under runsc, /proc is the Sentry's own emulation. As of the 2022-12 release it shows Uid,
CapInh/CapPrm/CapEff/CapBnd and Seccomp in /proc/self/status but no CapAmb or NoNewPrivs
lines, so those two are checked there through prctl(PR_CAPBSET_READ / PR_CAP_AMBIENT_IS_SET
/ PR_GET_NO_NEW_PRIVS), which both runtimes implement.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from adversarial_support import run_probe, spec

from closedpaw.sandbox.lifecycle.manager import SandboxManager

STATUS_PROBE = """
def status():
    with open("/proc/self/status") as f:
        return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
PR_CAPBSET_READ, PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAP_AMBIENT = 23, 39, 21, 47
PR_CAP_AMBIENT_IS_SET = 1
probe("status", lambda: {k: v.strip() for k, v in status().items()})
probe("ids", lambda: [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()])
probe("resuid", lambda: list(os.getresuid()) + list(os.getresgid()))
probe("nnp", lambda: raw(libc.prctl, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))
probe("seccomp", lambda: raw(libc.prctl, PR_GET_SECCOMP, 0, 0, 0, 0))
def caps(*args):
    # Capabilities for which prctl(*args, cap) is true, up to the last one the kernel knows
    # (it answers EINVAL past it).
    held = []
    for cap in range(64):
        ctypes.set_errno(0)
        r = libc.prctl(*args, cap, 0, 0)
        if r < 0:
            if cap == 0:
                raise OSError(ctypes.get_errno(), "prctl")
            break
        if r:
            held.append(cap)
    return held
probe("bounding", lambda: caps(PR_CAPBSET_READ))
probe("ambient", lambda: caps(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET))
emit()
"""


def test_identity_capabilities_and_seccomp(mgr: SandboxManager, runtime: str) -> None:
    f = run_probe(mgr, runtime, STATUS_PROBE, timeout_s=30)
    st = f["status"]["value"]
    assert st["Uid"].split() == ["65534"] * 4, st["Uid"]
    assert st["Gid"].split() == ["65534"] * 4, st["Gid"]
    assert f["ids"]["value"] == [65534, 65534, 65534, 65534, [65534]]
    assert f["resuid"]["value"] == [65534] * 6
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert int(st.get("CapAmb", "0"), 16) == 0
    if runtime == "runc":
        # The host kernel's /proc: every line is there.
        assert st["CapAmb"] == "0000000000000000"
        assert st["NoNewPrivs"] == "1"
        assert st["Seccomp"] == "2"
    else:
        assert "NoNewPrivs" not in st or st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2", st.get("Seccomp")  # 2 = SECCOMP_MODE_FILTER
    assert f["nnp"]["value"] == 1, f["nnp"]
    assert f["seccomp"]["value"] == 2, f["seccomp"]
    assert f["bounding"]["value"] == [], f["bounding"]
    # runsc answers EINVAL to PR_CAP_AMBIENT (no ambient capabilities at all).
    assert f["ambient"]["ok"] is False or f["ambient"]["value"] == [], f["ambient"]


MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
          "/proc/latency_stats", "/proc/interrupts", "/proc/acpi", "/proc/asound",
          "/proc/scsi", "/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap")

SENSITIVE = ("/proc/kallsyms", "/proc/kmsg", "/dev/kmsg", "/dev/mem", "/dev/port",
             "/sys/kernel/security", "/proc/sysrq-trigger", "/sys/kernel/debug")


def test_masked_paths_are_empty_or_absent(mgr: SandboxManager, runtime: str) -> None:
    body = f"""
    def read(p):
        if os.path.isdir(p):
            return ["dir", sorted(os.listdir(p))]
        with open(p, "rb") as f:
            return ["file", f.read(4096).decode("latin-1")]
    for p in {MASKED + SENSITIVE!r}:
        probe(p, lambda p=p: read(p))
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    for p in MASKED:
        res = f[p]
        if res["ok"]:
            kind, content = res["value"]
            assert not content, f"{p} is not masked: {kind} {content[:200]!r}"
        else:
            assert res["errno"] in ("ENOENT", "EACCES", "EPERM"), (p, res)
    # /proc/kallsyms may exist, but without addresses for an unprivileged reader.
    for p in SENSITIVE:
        res = f[p]
        if not res["ok"]:
            assert res["errno"] in ("ENOENT", "EACCES", "EPERM", "EINVAL", "EROFS"), (p, res)
            continue
        kind, content = res["value"]
        if p == "/proc/kallsyms":
            addrs = {line.split()[0] for line in content.splitlines() if line.split()}
            assert addrs <= {"0000000000000000"}, f"kernel addresses leak: {content[:200]!r}"
        else:
            assert not content, f"{p} readable: {content[:200]!r}"


def test_proc_sys_is_read_only(mgr: SandboxManager, runtime: str) -> None:
    host_hostname = socket.gethostname()
    with open("/proc/sys/vm/overcommit_memory") as fh:
        host_overcommit = fh.read()
    body = """
    def write(path, text):
        with open(path, "w") as f:
            f.write(text)
        return "written"
    probe("hostname", lambda: write("/proc/sys/kernel/hostname", "pwned"))
    probe("core_pattern", lambda: write("/proc/sys/kernel/core_pattern", "|/tmp/x"))
    probe("overcommit", lambda: write("/proc/sys/vm/overcommit_memory", "1"))
    probe("sysrq", lambda: write("/proc/sysrq-trigger", "h"))
    probe("sethostname", lambda: raw(libc.sethostname, b"pwned", 5))
    probe("after", lambda: open("/proc/sys/kernel/hostname").read().strip())
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    for name in ("hostname", "core_pattern", "overcommit", "sysrq", "sethostname"):
        assert f[name]["ok"] is False, (name, f[name])
        assert f[name]["errno"] in ("EROFS", "EACCES", "EPERM", "ENOENT"), (name, f[name])
    assert f["after"]["value"] == "sandbox"
    assert socket.gethostname() == host_hostname
    with open("/proc/sys/vm/overcommit_memory") as fh:
        assert fh.read() == host_overcommit
    with open("/proc/sys/kernel/core_pattern") as fh:
        assert "/tmp/x" not in fh.read()


# x86_64 syscall numbers for calls the libc (or Python 3.11) does not wrap.
ESCAPE_PROBE = """
import platform
assert platform.machine() == "x86_64", platform.machine()
SYS = dict(bpf=321, keyctl=250, add_key=248, pivot_root=155, init_module=175,
           finit_module=313, kexec_load=246, perf_event_open=298, userfaultfd=323,
           open_by_handle_at=304, setns=308, unshare=272, ptrace=101, mount=165, umount2=166,
           chroot=161, swapon=167, reboot=169, iopl=172, ioperm=173, delete_module=176,
           name_to_handle_at=303, process_vm_readv=310, kcmp=312, lookup_dcookie=212,
           fsopen=430, fsmount=432, open_tree=428, move_mount=429, setuid=105, setgid=106,
           setresuid=117, mknod=133, clone3=435, settimeofday=164, acct=163, quotactl=179)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
c = ctypes
def sc(name, *args):
    return lambda: raw(libc.syscall, c.c_long(SYS[name]), *args)
probe("mount_tmpfs", lambda: raw(libc.mount, b"tmpfs", b"/tmp", b"tmpfs", c.c_ulong(0), None))
probe("mount_proc", lambda: raw(libc.mount, b"proc", b"/tmp", b"proc", c.c_ulong(0), None))
probe("remount_root_rw", lambda: raw(libc.mount, None, b"/", None, c.c_ulong(32 | 4096), None))
probe("umount_usr", lambda: raw(libc.umount2, b"/usr", 2))
probe("unshare_user", lambda: raw(libc.unshare, CLONE_NEWUSER))
probe("unshare_mnt", lambda: raw(libc.unshare, CLONE_NEWNS))
probe("unshare_user_mnt", lambda: raw(libc.unshare, CLONE_NEWUSER | CLONE_NEWNS))
probe("unshare_net", lambda: raw(libc.unshare, CLONE_NEWNET))
probe("unshare_pid", lambda: raw(libc.unshare, CLONE_NEWPID))
def setns():
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)  # runsc has no mnt entry
    try:
        return raw(libc.setns, fd, 0)
    finally:
        os.close(fd)
probe("setns", setns)
probe("ptrace_traceme", lambda: raw(libc.ptrace, c.c_long(0), 0, None, None))
probe("ptrace_attach_1", lambda: raw(libc.ptrace, c.c_long(16), 1, None, None))
probe("ptrace_seize_1", lambda: raw(libc.ptrace, c.c_long(0x4206), 1, None, None))
probe("bpf", sc("bpf", 0, None, 0))
probe("keyctl", sc("keyctl", 0, c.c_long(-3), 0, 0, 0))
probe("add_key", sc("add_key", b"user", b"k", b"v", 1, c.c_long(-3)))
probe("chroot", lambda: raw(libc.chroot, b"/tmp"))
probe("pivot_root", sc("pivot_root", b"/tmp", b"/tmp"))
probe("init_module", sc("init_module", None, 0, b""))
probe("finit_module", sc("finit_module", 0, b"", 0))
probe("delete_module", sc("delete_module", b"ext4", 0))
probe("kexec_load", sc("kexec_load", 0, 0, None, 0))
probe("perf_event_open", sc("perf_event_open", None, 0, -1, -1, 0))
probe("open_by_handle_at", sc("open_by_handle_at", -100, None, 0))
probe("swapon", sc("swapon", b"/tmp/swap", 0))
probe("reboot", sc("reboot", 0xfee1dead, 672274793, 0x4321fedc, None))
probe("iopl", sc("iopl", 3))
probe("ioperm", sc("ioperm", 0, 1024, 1))
probe("acct", sc("acct", b"/tmp/acct"))
probe("settimeofday", sc("settimeofday", None, None))
probe("fsopen", sc("fsopen", b"tmpfs", 0))
probe("open_tree", sc("open_tree", -100, b"/", 1))
probe("mknod_char", lambda: raw(libc.mknod, b"/tmp/mem", 0o20666, c.c_ulong(0x0101)))
probe("mknod_block", lambda: raw(libc.mknod, b"/tmp/sda", 0o60666, c.c_ulong(0x0800)))
probe("setuid0", lambda: os.setuid(0))
probe("setgid0", lambda: os.setgid(0))
probe("setresuid0", lambda: os.setresuid(0, 0, 0))
probe("setgroups0", lambda: os.setgroups([0]))
probe("uid_after", lambda: [os.getuid(), os.geteuid()] + list(os.getresuid()))
emit()
"""

DENIED = ("mount_tmpfs", "mount_proc", "remount_root_rw", "umount_usr", "unshare_user",
          "unshare_mnt", "unshare_user_mnt", "unshare_net", "unshare_pid", "setns",
          "ptrace_traceme", "ptrace_attach_1", "ptrace_seize_1", "bpf", "keyctl", "add_key",
          "chroot", "pivot_root", "init_module", "finit_module", "delete_module",
          "kexec_load", "perf_event_open", "open_by_handle_at", "swapon", "reboot", "iopl",
          "ioperm", "acct", "settimeofday", "fsopen", "open_tree", "mknod_char",
          "mknod_block", "setuid0", "setgid0", "setresuid0", "setgroups0")


def test_escape_syscalls_are_denied(mgr: SandboxManager, runtime: str) -> None:
    f = run_probe(mgr, runtime, ESCAPE_PROBE, timeout_s=30)
    allowed = {n: f[n] for n in DENIED if f[n]["ok"]}
    assert not allowed, f"these calls succeeded in the sandbox: {allowed}"
    odd = {n: f[n] for n in DENIED
           if f[n]["errno"] not in ("EPERM", "EACCES", "ENOSYS", "EINVAL", "EBADF")}
    assert not odd, f"unexpected failures (not a denial): {odd}"
    # The main ones must be a clear denial, not an argument error that a better-formed call
    # might get past.
    for n in ("mount_tmpfs", "unshare_user", "unshare_user_mnt", "setns", "ptrace_traceme",
              "ptrace_attach_1", "bpf", "keyctl", "chroot", "setuid0", "remount_root_rw"):
        assert f[n]["errno"] in ("EPERM", "EACCES"), (n, f[n])
    assert f["uid_after"]["value"] == [65534] * 5


@pytest.mark.parametrize("tool", ["unshare", "nsenter"])
def test_namespace_tools_fail(mgr: SandboxManager, runtime: str, tool: str) -> None:
    """The util-linux tools from the host's /usr fail the same way as the raw calls."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing from the host's /usr (util-linux)")
    argv = {"unshare": ["unshare", "-r", "-m", "/bin/sh", "-c", "id -u; echo escaped"],
            "nsenter": ["nsenter", "-t", "1", "-m", "-u", "-n", "-p", "/bin/sh", "-c",
                        "echo escaped"]}[tool]
    r = mgr.run(argv, spec(timeout_s=30), runtime=runtime)
    assert r.exit_code != 0, r
    assert b"escaped" not in r.stdout


def test_host_processes_are_invisible(mgr: SandboxManager, runtime: str) -> None:
    me = os.getpid()
    body = f"""
    import signal
    probe("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    probe("kill_host", lambda: os.kill({me}, signal.SIGKILL))
    probe("kill_all", lambda: os.kill(-1, 0))
    probe("host_proc", lambda: open("/proc/{me}/cmdline").read())
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    # Only the sandbox's own processes, numbered from 1 in its pid namespace.
    assert f["pids"]["value"] and max(f["pids"]["value"]) < 50, f["pids"]
    assert me not in f["pids"]["value"]
    assert f["kill_host"]["ok"] is False and f["kill_host"]["errno"] == "ESRCH", f["kill_host"]
    assert f["host_proc"]["ok"] is False, f["host_proc"]
