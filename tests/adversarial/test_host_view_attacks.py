"""What a sandbox learns about the host from its own mount table and its /usr: the state
directory's path (which names the engine's layout and sandbox ids) must not show in
/proc/self/mountinfo for /input, /code and /output, and the host's /usr/local (cloud SDKs,
docker, kubectl, ...) is hidden unless a policy asks for it."""

from __future__ import annotations

import os
from pathlib import Path

from adversarial_support import findings, probe_argv, spec

from closedpaw.sandbox.lifecycle.manager import SandboxManager

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
