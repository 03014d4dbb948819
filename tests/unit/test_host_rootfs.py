import os
import stat
from pathlib import Path

import pytest

from closedpaw.errors import RuntimeUnavailable
from closedpaw.sandbox.images.host import MOUNT_POINTS, prepare_host_rootfs


def test_skeleton_has_only_what_programs_need(tmp_path: Path) -> None:
    r = prepare_host_rootfs(tmp_path)
    root = r.path
    assert root.parent == tmp_path / "rootfs"
    for d in MOUNT_POINTS:
        assert (root / d).is_dir()
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    assert os.readlink(root / "bin") == "usr/bin"
    etc = sorted(p.name for p in (root / "etc").iterdir())
    assert etc == ["alternatives", "group", "hostname", "hosts", "ld.so.cache", "localtime",
                   "nsswitch.conf", "passwd", "resolv.conf"]
    assert "nobody:x:65534:65534" in (root / "etc/passwd").read_text()
    assert not (root / "etc/shadow").exists()
    assert list((root / "usr").iterdir()) == []  # only a mount point


def test_skeleton_is_reused_and_content_addressed(tmp_path: Path) -> None:
    a = prepare_host_rootfs(tmp_path)
    b = prepare_host_rootfs(tmp_path)
    assert a == b
    assert a.path.name == f"host-{a.digest}"
    assert [p.name for p in (tmp_path / "rootfs").iterdir()] == [a.path.name]


def test_a_host_without_merged_usr_is_refused(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "bin").mkdir(parents=True)
    (host / "etc").mkdir()
    with pytest.raises(RuntimeUnavailable, match="merged-/usr"):
        prepare_host_rootfs(tmp_path / "data", host_root=host)


def test_links_out_of_usr_are_refused(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    os.symlink("/opt/lib", host / "lib")
    with pytest.raises(RuntimeUnavailable, match="outside /usr"):
        prepare_host_rootfs(tmp_path / "data", host_root=host)
