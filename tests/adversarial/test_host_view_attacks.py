"""What a sandbox learns about the host from its own mount table and its /usr: neither the
state directory's path (which names the engine's layout and sandbox ids) nor the data dir's
(where the host image's skeleton lives) may show in /proc/self/mountinfo, for the root as
for /input, /code and /output, and the host's /usr/local (cloud SDKs, docker, kubectl, ...)
is hidden unless a policy asks for it."""

from __future__ import annotations

import os
from pathlib import Path

from adversarial_support import findings, probe_argv, spec

from closedpaw.sandbox.images.store import Image
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.sandbox import AGENT_DIR
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

BODY = """
probe("mountinfo", lambda: open("/proc/self/mountinfo").read())
probe("usr_local", lambda: sorted(os.listdir("/usr/local")))
probe("write", lambda: open("/usr/local/x", "w"))
probe("input", lambda: open("/input/in.txt").read())
probe("code", lambda: sorted(os.listdir("/code")))
emit()
"""


def test_mountinfo_hides_host_paths_and_usr_local_is_empty(
        mgr: SandboxManager, runtime: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/in.txt").write_text("hi")
    sp = spec(timeout_s=30, input_path=tmp_path / "in", output_dir=tmp_path / "out",
              code_files={"main.py": "print(1)"})
    f = findings(mgr.run(probe_argv(BODY), sp, runtime=runtime))
    assert f["input"]["value"] == "hi" and f["code"]["value"] == ["main.py"], f
    assert f["usr_local"]["value"] == [], f["usr_local"]
    assert f["write"]["errno"] in ("EROFS", "EACCES"), f["write"]
    host_paths = (str(mgr.settings.state_dir), str(mgr.settings.data_dir), str(tmp_path),
                  "/run/closedpaw", "/tmp/pytest", "/var/lib/closedpaw", "rootfs/host-")
    lines = f["mountinfo"]["value"].splitlines()
    assert any(line.split()[4] == "/" for line in lines), lines   # the root's line is there
    for line in lines:
        assert not any(p in line for p in host_paths), line


def test_mountinfo_of_the_host_image_on_an_overlay_shows_no_host_path(
        mgr: SandboxManager, runtime: str) -> None:
    """The host image on a writable overlay (``readonly_root=False``) and on the overlay it
    takes when the skeleton lacks a mount point (a policy's extra tmpfs): the skeleton is
    the overlay's lower layer, named by its fd alone, never by its path."""
    forbidden = (str(mgr.settings.state_dir), str(mgr.settings.data_dir), "/var/lib/closedpaw",
                 "rootfs/host-", "/sandboxes/cp-")
    for sp in (spec(timeout_s=30, readonly_root=False), spec(timeout_s=30, tmpfs={"/scratch": 8})):
        r = mgr.run(["cat", "/proc/self/mountinfo"], sp, runtime=runtime)
        assert r.exit_code == 0, r.stderr_text
        lines = r.stdout_text.splitlines()
        assert any(line.split()[4] == "/" for line in lines), lines
        for line in lines:
            assert not any(p in line for p in forbidden), (sp, line)


def test_a_policy_can_ask_for_usr_local(mgr: SandboxManager, runtime: str) -> None:
    from closedpaw.sandbox.policy import load_policies

    body = 'probe("usr_local", lambda: sorted(os.listdir("/usr/local")))\nemit()\n'
    f = findings(mgr.run(probe_argv(body), spec(timeout_s=30, usr_local=True),
                         runtime=runtime))
    assert f["usr_local"]["value"] == sorted(os.listdir("/usr/local"))
    assert load_policies(None).get("default").spec.usr_local is False


def test_mountinfo_of_long_lived_sandboxes_shows_no_host_path(
        mgr: SandboxManager, runtime: str, tmp_path: Path,
        built_images: dict[str, Image]) -> None:
    """An agent sandbox on the host image and one on a store image's overlay: no line of
    /proc/self/mountinfo names the state dir (the overlay's upper and work dirs, the agent's
    files, /input), the data dir (the host image's skeleton, which runc shows through a
    read-only overlay of /proc/self/fd layers), the image store (the overlay's lower dir)
    or where ClosedPaw is installed (the agent's files)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/in.txt").write_text("hi")
    forbidden = (str(mgr.settings.state_dir), str(mgr.settings.data_dir),
                 str(mgr.settings.images), str(AGENT_DIR), str(AGENT_DIR.parent),
                 str(tmp_path), "/sandboxes/cp-", "/var/lib/closedpaw", "rootfs/host-")
    for image in ("python", "host"):
        sp = SandboxSpec(image=image, limits=ResourceLimits(memory_mb=128, timeout_s=60),
                         input_path=tmp_path / "in", output_dir=tmp_path / f"out-{image}")
        with mgr.create(sp, runtime=runtime) as sb:
            assert sb.agent, image
            r = sb.exec(["cat", "/proc/self/mountinfo"])
            assert r.exit_code == 0, r
            lines = r.stdout_text.splitlines()
            assert sb.exec(["cat", "/input/in.txt"]).stdout == b"hi"
            assert sb.code.run("1 + 1").value == "2"   # the agent's kernel file is there
        assert any(line.split()[4] == "/" for line in lines), (image, lines)
        for line in lines:
            assert not any(p in line for p in forbidden), (image, line)
