"""Attacks on store images from inside a sandbox on its overlay root: modifying the image's
files, planting setuid binaries, hard links and device nodes, filling the upper layer. The
image's digest and the host's copy of the image must be unchanged afterwards."""

from __future__ import annotations

import textwrap

from closedpaw.sandbox.images.store import Image, ImageStore
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

ATTACK = textwrap.dedent("""
    import os, stat
    def attempt(name, fn):
        try:
            fn()
            print(name, "SUCCEEDED")
        except OSError as e:
            print(name, "refused", e.errno)
    def append(p):
        with open(p, "ab") as f:
            f.write(b"pwned")
    attempt("write-binary", lambda: append("/usr/bin/python3"))
    attempt("write-etc", lambda: append("/etc/passwd"))
    attempt("unlink-lib", lambda: os.unlink("/usr/lib/os-release"))
    attempt("rename-bin", lambda: os.rename("/usr/bin/python3", "/var/tmp/p"))
    attempt("chmod-bin", lambda: os.chmod("/usr/bin/python3", 0o777))
    attempt("hardlink-shadow", lambda: os.link("/etc/shadow", "/var/tmp/shadow"))
    attempt("mknod", lambda: os.mknod("/var/tmp/mem", stat.S_IFCHR | 0o666, os.makedev(1, 1)))
    with open("/var/tmp/suid", "wb") as f:
        f.write(b"#!/bin/sh\\n")
    os.chmod("/var/tmp/suid", 0o4755)
    print("suid-bit", oct(os.stat("/var/tmp/suid").st_mode & 0o4000))
    written = 0
    try:
        with open("/var/tmp/fill", "wb") as f:
            while written < (64 << 20):
                f.write(b"x" * (1 << 20))
                written += 1 << 20
    except OSError as e:
        print("fill refused", e.errno)
    """)


def test_the_image_survives_attacks_from_its_sandbox(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image]) -> None:
    store = ImageStore(mgr.settings.images)
    before = store.get("python")
    spec = SandboxSpec(image="python", limits=ResourceLimits(memory_mb=256, disk_mb=16,
                                                             timeout_s=60))
    r = mgr.run(["python3", "-c", ATTACK], spec, runtime=runtime)
    out = r.stdout_text
    assert r.exit_code == 0, r.stderr_text
    assert "SUCCEEDED" not in out, out
    for name in ("write-binary", "write-etc", "unlink-lib", "rename-bin", "chmod-bin",
                 "hardlink-shadow", "mknod"):
        assert f"{name} refused" in out, out
    assert "fill refused 28" in out, out            # the upper layer is capped by disk_mb
    # After the run: nothing of it is left anywhere the host keeps the image.
    assert not (before.rootfs / "var/tmp/suid").exists()
    assert not (before.rootfs / "var/tmp/fill").exists()
    assert store.verify("python"), "the python image was modified by its sandbox"
    assert store.get("python").digest == before.digest
