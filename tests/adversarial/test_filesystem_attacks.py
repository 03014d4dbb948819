"""Filesystem attacks: reading the host outside the skeleton root, writing to the read-only
root, and abusing /output with links so that collecting it writes outside its destination.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from pathlib import Path

import pytest
from adversarial_support import MIB, findings, probe_argv, run_probe, snapshot, spec

from closedpaw.sandbox.images.host import prepare_host_rootfs
from closedpaw.sandbox.lifecycle.manager import SandboxManager

HOST_PATHS = ("/root", "/home", "/work", "/work/main", "/work/main/pyproject.toml",
              "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/var/lib/closedpaw",
              "/run/closedpaw", "/proc/1/root/etc/shadow", "/boot", "/srv", "/opt", "/mnt")

READ_ANY = """
def read_any(path):
    if os.path.isdir(path):
        return sorted(os.listdir(path))
    with open(path, "rb") as f:
        return f.read(4096).decode("utf-8", "replace")
"""


def test_host_files_are_not_visible(mgr: SandboxManager, runtime: str) -> None:
    body = READ_ANY + textwrap.dedent(f"""
    import socket
    for p in {HOST_PATHS!r}:
        probe(p, lambda p=p: read_any(p))
    probe("etc", lambda: sorted(os.listdir("/etc")))
    probe("root_dir", lambda: sorted(os.listdir("/")))
    probe("etc_hostname", lambda: read_any("/etc/hostname"))
    probe("kernel_hostname", lambda: read_any("/proc/sys/kernel/hostname"))
    probe("gethostname", socket.gethostname)
    emit()
    """)
    f = run_probe(mgr, runtime, body, timeout_s=30)
    for p in HOST_PATHS:
        assert f[p]["ok"] is False, f"{p} is readable inside: {f[p]}"
        assert f[p]["errno"] in ("ENOENT", "EACCES", "EPERM"), (p, f[p])
    # The skeleton's /etc holds only generated files: nothing of the host's.
    assert set(f["etc"]["value"]) <= {"passwd", "group", "hosts", "nsswitch.conf", "hostname",
                                      "resolv.conf", "ld.so.cache", "localtime",
                                      "alternatives"}, f["etc"]
    assert not {"root", "home", "work", "boot", "srv", "opt", "mnt"} & set(
        f["root_dir"]["value"]), f["root_dir"]
    host_hostname = Path("/etc/hostname").read_text().strip()
    assert host_hostname and host_hostname != "sandbox"
    assert f["etc_hostname"]["value"].strip() != host_hostname
    assert f["kernel_hostname"]["value"].strip() != host_hostname
    assert f["gethostname"]["value"] != host_hostname
    assert f["gethostname"]["value"] == "sandbox"


def test_secret_on_host_never_reaches_the_sandbox(
        mgr: SandboxManager, runtime: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = "cpsecret-" + secrets.token_hex(16)
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    secret = secret_dir / "token.txt"
    secret.write_text(token + "\n")
    os.chmod(secret, 0o644)  # even world-readable on the host
    for d in (tmp_path, secret_dir):
        os.chmod(d, 0o755)
    # Also in the environment of the calling process: sandboxes inherit none of it.
    monkeypatch.setenv("CLOSEDPAW_ADV_SECRET", token)
    # Positive control for the scan: a file that is meant to be visible, under /input.
    control = "cpsecret-control-" + secrets.token_hex(8)
    inp = tmp_path / "input"
    inp.mkdir()
    (inp / "control.txt").write_text(control + "\n")
    body = READ_ANY + textwrap.dedent(f"""
    found = []
    def scan(top, skip=("/proc", "/sys", "/usr", "/dev")):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames
                           if os.path.join(dirpath, d) not in skip]
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    with open(p, "rb") as f:
                        data = f.read(1 << 20)
                except OSError:
                    continue
                if b"cpsecret-" in data:
                    found.append((p, data[:200].decode("utf-8", "replace")))
        return len(found)
    probe("direct", lambda: read_any({str(secret)!r}))
    probe("via_proc_root", lambda: read_any("/proc/1/root" + {str(secret)!r}))
    probe("env", lambda: dict(os.environ))
    probe("proc_environ", lambda: read_any("/proc/self/environ"))
    probe("init_environ", lambda: read_any("/proc/1/environ"))
    probe("scan", lambda: scan("/"))
    probe("found", lambda: found)
    emit()
    """)
    r = mgr.run(probe_argv(body), spec(timeout_s=60, input_path=inp), runtime=runtime)
    f = findings(r)
    assert f["direct"]["ok"] is False and f["direct"]["errno"] == "ENOENT", f["direct"]
    assert f["via_proc_root"]["ok"] is False, f["via_proc_root"]
    assert "CLOSEDPAW_ADV_SECRET" not in f["env"]["value"]
    assert f["scan"]["ok"], f["scan"]
    assert f["found"]["value"] == [["/input/control.txt", control + "\n"]], f["found"]
    assert token.encode() not in r.stdout and token.encode() not in r.stderr


def test_root_filesystem_is_read_only(mgr: SandboxManager, runtime: str) -> None:
    marker = "closedpaw-adv-marker-" + secrets.token_hex(6)
    rootfs = prepare_host_rootfs(mgr.settings.data_dir).path
    before = snapshot(rootfs)
    usr_before = os.stat("/usr").st_mtime_ns, os.stat("/usr/bin").st_mtime_ns
    targets = ["/", "/etc", "/usr", "/usr/bin", "/bin", "/usr/lib", "/var", "/run", "/sbin"]
    body = f"""
    def write(path):
        with open(path, "w") as f:
            f.write("pwned")
        return "written"
    for d in {targets!r}:
        probe("file:" + d, lambda d=d: write(os.path.join(d, {marker!r})))
        probe("mkdir:" + d, lambda d=d: os.mkdir(os.path.join(d, {marker!r} + ".d")))
    probe("etc_passwd", lambda: write("/etc/passwd"))
    probe("chmod_etc", lambda: os.chmod("/etc", 0o777))
    probe("symlink_root", lambda: os.symlink("/tmp", "/{marker}.lnk"))
    probe("rename_etc", lambda: os.rename("/etc/hosts", "/etc/hosts.old"))
    probe("tmp", lambda: write("/tmp/{marker}"))
    probe("tmp_read", lambda: open("/tmp/{marker}").read())
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    for d in targets:
        for kind in ("file", "mkdir"):
            res = f[f"{kind}:{d}"]
            assert res["ok"] is False, f"{kind} in {d} succeeded: {res}"
            assert res["errno"] in ("EROFS", "EACCES", "EPERM"), (d, res)
    for name in ("etc_passwd", "chmod_etc", "symlink_root", "rename_etc"):
        assert f[name]["ok"] is False, (name, f[name])
    assert f["tmp"]["ok"] is True and f["tmp_read"]["value"] == "pwned", f
    # The host is unchanged: the skeleton, /usr, and no marker anywhere it could land.
    assert snapshot(rootfs) == before
    assert (os.stat("/usr").st_mtime_ns, os.stat("/usr/bin").st_mtime_ns) == usr_before
    for d in [*targets, "/tmp", str(rootfs), str(rootfs / "etc"), str(rootfs / "tmp")]:
        assert not list(Path(d).glob(marker + "*")), f"marker found in host {d}"


def test_output_links_never_redirect_collection(mgr: SandboxManager, runtime: str,
                                                tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("original\n")
    (outside / "victim_dir").mkdir()
    # Links planted in the destination before the run, pointing outside it.
    (dest / "collide.txt").symlink_to(victim)
    (dest / "collide_dir").symlink_to(outside / "victim_dir")
    passwd_before = Path("/etc/passwd").read_bytes()
    root_before = sorted(os.listdir("/root"))
    outside_before = snapshot(outside)

    body = """
    os.symlink("/etc/passwd", "/output/link")
    os.symlink("/root", "/output/dir")
    os.symlink("../../../../../../etc", "/output/relative")
    with open("/output/regular.txt", "w") as f:
        f.write("hello\\n")
    os.makedirs("/output/sub/deeper")
    with open("/output/sub/deeper/nested.txt", "w") as f:
        f.write("nested\\n")
    with open("/output/collide.txt", "w") as f:
        f.write("from the sandbox\\n")
    os.mkdir("/output/collide_dir")
    with open("/output/collide_dir/evil.txt", "w") as f:
        f.write("evil\\n")
    # Links inside a real directory, and a dir link with a file "under" it.
    os.symlink("/etc/shadow", "/output/sub/shadow")
    probe("fifo", lambda: os.mkfifo("/output/fifo"))
    probe("hardlink", lambda: os.link("/etc/passwd", "/output/hard"))
    emit()
    """
    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir=dest), runtime=runtime)
    f = findings(r)
    assert f["hardlink"]["ok"] is False, f  # another filesystem: EXDEV (or EPERM)

    # Regular files were copied.
    assert (dest / "regular.txt").read_text() == "hello\n"
    assert (dest / "sub/deeper/nested.txt").read_text() == "nested\n"
    assert "regular.txt" in r.output_files
    assert "sub/deeper/nested.txt" in r.output_files
    # The pre-existing link was replaced by a regular file, never written through.
    assert not (dest / "collide.txt").is_symlink()
    assert (dest / "collide.txt").read_text() == "from the sandbox\n"
    assert victim.read_text() == "original\n"
    # The sandbox's links were skipped and reported.
    skipped = {s.path: s.reason for s in r.skipped_files}
    for link in ("link", "dir", "relative", "sub/shadow"):
        assert link in skipped, (link, r.skipped_files)
        assert "link" in skipped[link], skipped[link]
        assert not os.path.lexists(dest / link), link
    assert any(p.startswith("collide_dir") for p in skipped), r.skipped_files
    if f["fifo"]["ok"]:
        assert "fifo" in skipped and not os.path.lexists(dest / "fifo")
    # Nothing outside the destination changed.
    assert snapshot(outside) == outside_before
    assert not (outside / "victim_dir" / "evil.txt").exists()
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert sorted(os.listdir("/root")) == root_before
    assert sorted(os.listdir(tmp_path)) == ["dest", "outside"]


def test_output_dir_size_cap(mgr: SandboxManager, runtime: str, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    body = """
    def fill():
        written = 0
        with open("/output/big", "wb") as f:
            chunk = b"y" * (1 << 20)
            while written < 16 * (1 << 20):
                f.write(chunk)
                f.flush()
                written += len(chunk)
        return written
    probe("fill", fill)
    probe("size", lambda: os.stat("/output/big").st_size)
    emit()
    """
    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir_mb=2, output_dir=dest),
                runtime=runtime)
    f = findings(r)
    assert f["fill"]["ok"] is False and f["fill"]["errno"] == "ENOSPC", f
    assert f["size"]["value"] <= 2 * MIB, f
    assert (dest / "big").stat().st_size <= 2 * MIB


def test_input_is_read_only(mgr: SandboxManager, runtime: str, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "data.txt").write_text("input\n")
    before = snapshot(inp)
    body = """
    def write(path):
        with open(path, "w") as f:
            f.write("pwned")
        return "written"
    probe("overwrite", lambda: write("/input/data.txt"))
    probe("create", lambda: write("/input/new.txt"))
    probe("unlink", lambda: os.unlink("/input/data.txt"))
    probe("read", lambda: open("/input/data.txt").read())
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30, input_path=inp)
    for name in ("overwrite", "create", "unlink"):
        assert f[name]["ok"] is False, (name, f[name])
        assert f[name]["errno"] in ("EROFS", "EACCES", "EPERM"), (name, f[name])
    assert f["read"]["value"] == "input\n"
    assert snapshot(inp) == before


def test_working_directory_cannot_create_host_directories(mgr: SandboxManager, runtime: str,
                                                          tmp_path: Path) -> None:
    """A missing working directory would be created by the runtime before the root turns
    read-only: runc in the shared image, runsc's root gofer even through the read-only /usr
    bind. One missing from the image is created in the sandbox's own overlay instead; one
    beneath a mount is refused before any runtime sees it; exec into a live sandbox with a
    missing directory is an error of that exec only. The host and the image stay as they
    were."""
    from closedpaw.errors import SpecError

    marker = "closedpaw-adv-wd-" + secrets.token_hex(6)
    rootfs = prepare_host_rootfs(mgr.settings.data_dir).path
    before = snapshot(rootfs)
    usr_before = os.stat("/usr").st_mtime_ns
    (tmp_path / "in").mkdir()
    refused = [f"/usr/{marker}", f"/bin/{marker}", f"/var/tmp/{marker}", f"/input/{marker}",
               f"/tmp/{marker}", f"/proc/{marker}"]
    for wd in refused:
        with pytest.raises(SpecError, match="workdir"):
            mgr.run(["true"], spec(workdir=wd, input_path=tmp_path / "in"), runtime=runtime)
    for wd in (f"/{marker}", f"/etc/{marker}/deeper", f"/etc/alternatives/./{marker}"):
        r = mgr.run(["python3", "-c", "import os; print(os.getcwd())"], spec(workdir=wd),
                    runtime=runtime)
        assert r.exit_code == 0, r
        assert r.stdout_text == os.path.normpath(wd) + "\n", r
        assert r.isolation.rootfs.endswith(":overlay:ro"), r.isolation
    with mgr.create(spec(), runtime=runtime) as sb:
        for wd in (f"/usr/{marker}", f"/{marker}", f"/tmp/{marker}"):
            with pytest.raises(SpecError, match="workdir"):
                sb.exec(["true"], workdir=wd)
        ok = sb.exec(["/bin/sh", "-c", f"mkdir /tmp/{marker}"])
        assert ok.exit_code == 0, ok
        r = sb.exec(["python3", "-c", "import os; print(os.getcwd())"],
                    workdir=f"/tmp/{marker}")
        assert r.stdout_text == f"/tmp/{marker}\n", r
    assert snapshot(rootfs) == before
    assert os.stat("/usr").st_mtime_ns == usr_before
    for d in ("/", "/usr", "/etc", "/var/tmp", str(rootfs), str(rootfs / "etc")):
        assert not list(Path(d).glob(marker + "*")), f"{marker} created in host {d}"


def test_non_executable_command_is_126(mgr: SandboxManager, runtime: str) -> None:
    for argv in (["/etc/passwd"], ["/tmp"]):
        r = mgr.run(argv, spec(), runtime=runtime)
        assert r.exit_code == 126, r
        assert b"permission denied" in r.stderr
