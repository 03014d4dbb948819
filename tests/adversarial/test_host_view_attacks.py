"""What a sandbox learns about the host from its own mount table and its /usr: the state
directory's path (which names the engine's layout and sandbox ids) must not show in
/proc/self/mountinfo for /input, /code and /output, and the host's /usr/local (cloud SDKs,
docker, kubectl, ...) is hidden unless a policy asks for it."""

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
    state = str(mgr.settings.state_dir)
    host_paths = (state, str(tmp_path), "/run/closedpaw", "/tmp/pytest")
    for line in f["mountinfo"]["value"].splitlines():
        mount_point = line.split()[4]
        if mount_point == "/":
            continue   # runc: the root's path on its filesystem (docs/sandbox-hardening.md)
        assert not any(p in line for p in host_paths), line


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
    files, /input), the image store (the overlay's lower dir) or where ClosedPaw is
    installed (the agent's files). Under runc the host image's root line keeps its path on
    the data dir's filesystem (docs/sandbox-hardening.md); nothing else may."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/in.txt").write_text("hi")
    state = str(mgr.settings.state_dir)
    forbidden = (state, str(mgr.settings.images), str(AGENT_DIR), str(AGENT_DIR.parent),
                 str(tmp_path), "/sandboxes/cp-")
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
        assert lines, image
        for line in lines:
            if image == "host" and line.split()[4] == "/":
                assert state not in line and str(mgr.settings.images) not in line, line
                continue
            assert not any(p in line for p in forbidden), (image, line)
