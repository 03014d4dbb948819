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


def _fake_host(root: Path) -> Path:
    """A merged-/usr host of our own: links, alternatives, a loader cache, settled (their
    file times old enough that a later change cannot keep them)."""
    import time

    (root / "etc/alternatives").mkdir(parents=True)
    for name in ("bin", "lib"):
        os.symlink(f"usr/{name}", root / name)
    os.symlink("/usr/bin/python3.11", root / "etc/alternatives/python")
    (root / "etc/ld.so.cache").write_bytes(b"cache-1")
    time.sleep(0.25)
    return root


def _settle() -> None:
    import time

    time.sleep(0.25)


def test_the_digest_is_remembered_until_what_it_hashed_changes(tmp_path: Path) -> None:
    """The digest (a hash of the alternatives and the loader cache) is kept in data_dir
    keyed by those files' identities: a run reuses it, and any change shows at once."""
    from closedpaw.sandbox.images.host import DIGEST_CACHE, _digest, _host_links, _locate

    host, data = _fake_host(tmp_path / "host"), tmp_path / "data"
    first = prepare_host_rootfs(data, host_root=host)
    assert (data / DIGEST_CACHE).is_file()
    assert prepare_host_rootfs(data, host_root=host) == first
    links = _host_links(host)
    assert _locate(data, host, links)[0] == first      # what a fresh computation says

    os.symlink("/usr/bin/vim.basic", host / "etc/alternatives/vi")   # a new alternative
    second = prepare_host_rootfs(data, host_root=host)   # just changed: computed, not kept
    assert second != first and second.path.is_dir()
    assert prepare_host_rootfs(data, host_root=host) == second
    _settle()
    assert prepare_host_rootfs(data, host_root=host) == second   # now settled: kept
    (host / "etc/ld.so.cache").write_bytes(b"cache-2")                # ldconfig ran
    third = prepare_host_rootfs(data, host_root=host)
    assert third != second
    alts = {"python": "/usr/bin/python3.11", "vi": "/usr/bin/vim.basic"}
    assert third.digest == _digest(links, alts, b"cache-2")
    _settle()
    assert prepare_host_rootfs(data, host_root=host) == third
    os.remove(host / "etc/alternatives/vi")
    os.symlink("/usr/bin/nvi", host / "etc/alternatives/vi")          # replaced, same name
    assert prepare_host_rootfs(data, host_root=host).digest == \
        _digest(links, {**alts, "vi": "/usr/bin/nvi"}, b"cache-2")


def test_a_just_changed_host_is_hashed_each_time(tmp_path: Path) -> None:
    """A change within the same file-time tick as the last look would leave the times as
    they were: while the inputs are that fresh, nothing is remembered."""
    from closedpaw.sandbox.images.host import DIGEST_CACHE

    host, data = _fake_host(tmp_path / "host"), tmp_path / "data"
    os.symlink("/usr/bin/vim.basic", host / "etc/alternatives/vi")
    prepare_host_rootfs(data, host_root=host)
    assert not (data / DIGEST_CACHE).exists()


@pytest.mark.parametrize("bad", [b"{not json", b'{"key": 1, "digest": "x"}',
                                 b'{"key": null, "digest": "../../etc"}'])
def test_a_damaged_digest_cache_is_ignored(tmp_path: Path, bad: bytes) -> None:
    from closedpaw.sandbox.images.host import DIGEST_CACHE

    host, data = _fake_host(tmp_path / "host"), tmp_path / "data"
    good = prepare_host_rootfs(data, host_root=host)
    (data / DIGEST_CACHE).write_bytes(bad)
    assert prepare_host_rootfs(data, host_root=host) == good
    assert prepare_host_rootfs(data, host_root=host) == good   # and it was rewritten


def test_a_remembered_skeleton_that_is_gone_is_built_again(tmp_path: Path) -> None:
    import shutil

    host, data = _fake_host(tmp_path / "host"), tmp_path / "data"
    first = prepare_host_rootfs(data, host_root=host)
    shutil.rmtree(first.path)
    again = prepare_host_rootfs(data, host_root=host)
    assert again == first and again.path.is_dir()
