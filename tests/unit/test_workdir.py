"""The working directory must exist before a sandbox starts (runtimes would create it on the
host otherwise); it is resolved as the sandbox would see it, through links and mounts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import SpecError
from closedpaw.sandbox.host.statedir import check_workdir


@pytest.fixture
def view(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path / "rootfs"
    usr = tmp_path / "host-usr"
    for d in ("etc/alternatives", "tmp", "usr", "input", "var"):
        (root / d).mkdir(parents=True)
    (usr / "bin").mkdir(parents=True)
    (usr / "lib").mkdir()
    (root / "etc/passwd").write_text("x")
    os.symlink("usr/bin", root / "bin")
    os.symlink("/tmp", root / "var/tmp")
    os.symlink("/root", root / "etc/evil")          # absolute: resolved inside the sandbox
    os.symlink("../../../../../..", root / "etc/up")  # cannot climb out of the root
    os.symlink("loop", root / "etc/loop")
    os.symlink("../bin", usr / "lib/up")
    mounts = [
        {"destination": "/usr", "type": "bind", "source": str(usr)},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/proc", "type": "proc", "source": "proc"},
    ]
    return root, mounts


@pytest.mark.parametrize("cwd", ["/", "/tmp", "/etc", "/etc/alternatives", "/usr", "/usr/bin",
                                 "/bin", "/var/tmp", "/proc", "/usr/lib/up", "/etc/up",
                                 "/./etc/", "/etc/alternatives/.."])
def test_existing_directories_are_accepted(view: tuple[Path, list[dict[str, Any]]],
                                           cwd: str) -> None:
    assert check_workdir(cwd, *view) is True


@pytest.mark.parametrize("cwd", ["/nope", "/etc/nope/deeper", "/etc/evil", "/etc/evil/x"])
def test_missing_from_the_image_itself_needs_an_overlay(
        view: tuple[Path, list[dict[str, Any]]], cwd: str) -> None:
    """The runtime would create these in the image: the caller must give the sandbox its own
    overlay first (SandboxDir does)."""
    assert check_workdir(cwd, *view) is False


@pytest.mark.parametrize(("cwd", "why"), [
    ("/usr/nope", "does not exist"), ("/tmp/nope", "does not exist"),
    ("/var/tmp/nope", "does not exist"), ("/proc/self", "does not exist"),
    ("/etc/passwd", "not a directory"), ("/etc/loop", "too many levels"),
    ("/bin/nope", "does not exist"), ("/usr/bin/x/y", "does not exist"),
])
def test_missing_or_odd_directories_are_refused(view: tuple[Path, list[dict[str, Any]]],
                                                cwd: str, why: str) -> None:
    with pytest.raises(SpecError, match=why) as e:
        check_workdir(cwd, *view)
    assert e.value.field == "workdir"


def test_links_never_reach_the_host(view: tuple[Path, list[dict[str, Any]]]) -> None:
    """/etc/evil -> /root exists on this host, but inside the sandbox view it does not."""
    assert Path("/root").is_dir()
    assert check_workdir("/etc/evil", *view) is False
