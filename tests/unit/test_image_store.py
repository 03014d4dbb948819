"""The image store's pure parts: names, tree digests, manifests, and finding the host's
Debian mirror in its apt sources."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from closedpaw.errors import ImageError, ImageNotFound, SpecError
from closedpaw.sandbox.images.debootstrap import FALLBACK_MIRROR, host_mirror, host_suite
from closedpaw.sandbox.images.overlay import mount_overlay, unmount_overlay
from closedpaw.sandbox.images.store import (
    Image,
    ImageStore,
    lower_in_use,
    overlay_lower_dirs,
    remove_tree,
    tree_digest,
    validate_name,
)


def tree(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("hello")
    os.symlink("d/f", root / "link")
    return root


def test_tree_digest_sees_content_modes_links_and_names(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    d0, size = tree_digest(root)
    assert d0.startswith("sha256:") and size == 5
    assert tree_digest(root)[0] == d0
    changes = [
        lambda: (root / "d/f").write_text("hellO"),
        lambda: os.chmod(root / "d/f", 0o600),
        lambda: (os.unlink(root / "link"), os.symlink("d/g", root / "link")),
        lambda: (root / "d/new").write_text(""),
        lambda: os.rename(root / "d/f", root / "d/g"),
    ]
    seen = {d0}
    for change in changes:
        change()
        d = tree_digest(root)[0]
        assert d not in seen
        seen.add(d)


@pytest.mark.parametrize("name", ["python", "my-img.v2", "a", "x" * 63])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Py", "-x", ".x", "a/b", "..", "x" * 64, None])
def test_bad_names(name: object) -> None:
    with pytest.raises(SpecError):
        validate_name(name)


def test_missing_image_says_how_to_build_it(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(ImageNotFound, match="closedpaw image build node"):
        store.get("node")
    with pytest.raises(ImageNotFound):
        store.remove("node")
    with pytest.raises(ImageError, match="built in"):
        store.remove("host")
    assert store.list() == []


def test_install_writes_a_manifest_and_replaces_atomically(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    with store.lock(), store.staging("demo") as staged:
        tree(staged / "rootfs")
        img = store.install("demo", staged, {"type": "test"})
    assert img.size > 5 and img.source == {"type": "test"} and img.created.endswith("Z")
    assert (img.rootfs / "tmp").is_dir() and (img.rootfs / "etc/resolv.conf").read_text() == ""
    assert store.verify("demo")
    (img.rootfs / "d/f").write_text("tampered")
    assert not store.verify("demo")
    with store.lock(), store.staging("demo") as staged:
        tree(staged / "rootfs")
        again = store.install("demo", staged, {"type": "test"})
    assert again.digest == img.digest and store.verify("demo")
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "demo"]


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(RuntimeError), store.staging("demo") as staged:
        (staged / "rootfs").mkdir()
        raise RuntimeError("build failed")
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
    with pytest.raises(ImageError, match="host"), store.staging("host"):
        pass


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert host_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert host_mirror("bookworm", tmp_path) == "http://one.example/debian"
    assert host_mirror("trixie", tmp_path) == FALLBACK_MIRROR


def test_suite_from_os_release(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
    assert host_suite(f) == "bookworm"


def install_tree(store: ImageStore, name: str, content: str) -> Image:
    with store.lock(), store.staging(name) as staged:
        (staged / "rootfs").mkdir()
        (staged / "rootfs/v").write_text(content)
        return store.install(name, staged, {"type": "test"})


def test_a_root_in_use_by_an_overlay_outlives_rebuild_and_rm(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("mounting overlays needs root: run 'make test' as root", pytrace=False)
    store = ImageStore(tmp_path / "store")
    old = install_tree(store, "img", "1")
    sb = tmp_path / "sandbox"
    sb.mkdir()
    mount_overlay(old.rootfs, sb / "layer", sb / "rootfs", 8)
    try:
        # the overlay names its lower layer without the store's host path, and the store
        # still sees that root in use
        assert not any(str(store.root) in u for u in overlay_lower_dirs())
        assert lower_in_use(old.rootfs, overlay_lower_dirs())
        new = install_tree(store, "img", "2")
        assert new.rootfs != old.rootfs and store.get("img").digest == new.digest
        assert (sb / "rootfs/v").read_text() == "1"   # the running sandbox keeps its files
        assert old.rootfs.is_dir()
        store.remove("img")
        assert store.list() == [] and not new.rootfs.exists() and old.rootfs.is_dir()
    finally:
        unmount_overlay(sb / "layer", sb / "rootfs")
    assert not lower_in_use(old.rootfs, overlay_lower_dirs())
    again = install_tree(store, "img", "3")                # the next install sweeps
    assert not old.rootfs.exists() and again.rootfs.is_dir()
    assert sorted(p.name for p in (store.root / "img").iterdir()) == \
        ["manifest.json", again.rootfs.name]


def test_reinstalling_the_same_tree_installs_it_afresh(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    a = install_tree(store, "img", "same")
    b = install_tree(store, "img", "same")
    assert a.rootfs != b.rootfs and a.digest == b.digest and store.verify("img")
    assert sorted(p.name for p in (store.root / "img").iterdir()) == \
        ["manifest.json", b.rootfs.name]


def test_remove_tree_never_deletes_through_a_mount(tmp_path: Path) -> None:
    """A build chroot's /proc or /dev left mounted must stop the cleanup, not be emptied."""
    if os.geteuid() != 0:
        pytest.fail("mounting needs root: run 'make test' as root", pytrace=False)
    from closedpaw.sandbox.host.files import mount_output, unmount_output

    victim = tmp_path / "tree/dev"
    mount_output(victim, 1)
    (victim / "precious").write_text("keep me")
    try:
        with pytest.raises(ImageError, match="still mounted"):
            remove_tree(tmp_path / "tree")
        assert (victim / "precious").read_text() == "keep me"
    finally:
        unmount_output(victim)
    remove_tree(tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_modes_keep_other_users_out_of_image_trees(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: run 'make test' as root", pytrace=False)
    store = ImageStore(tmp_path / "images")
    with store.staging("demo") as staged:
        (staged / "rootfs" / "tmp").mkdir(parents=True)
        assert stat.S_IMODE(os.stat(staged).st_mode) == 0o700
        img = store.install("demo", staged, {"type": "test"})
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o755          # listable
    assert stat.S_IMODE(os.stat(img.rootfs).st_mode) == 0o700          # not enterable
    assert stat.S_IMODE(os.stat(img.rootfs / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(store.root / "demo" / "manifest.json").st_mode) == 0o644
    # A root created by an older version (0755) is closed by the next collection.
    os.chmod(img.rootfs, 0o755)
    store.collect()
    assert stat.S_IMODE(os.stat(img.rootfs).st_mode) == 0o700


def test_a_store_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: run 'make test' as root", pytrace=False)
    root = tmp_path / "images"
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(ImageError, match="owned by uid 65534"), \
            ImageStore(root).staging("demo"):
        pass
    assert os.listdir(root) == []


def test_collect_removes_dead_base_builds_and_spares_live_ones(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: run 'make test' as root", pytrace=False)
    from closedpaw.sandbox.images.store import gc_staging, locked_tempdir

    store = ImageStore(tmp_path / "images")
    base = store.root / ".base"
    base.mkdir(parents=True, mode=0o755)
    dead = base / ".tmp-base-dead"
    (dead / "root" / "tmp").mkdir(parents=True)
    os.chmod(dead / "root" / "tmp", 0o1777)
    with locked_tempdir(base, ".tmp-base-") as live:
        report = gc_staging(store.root)
        assert live.is_dir() and not dead.exists(), report
        assert any(".tmp-base-dead: removed" in line for line in report), report
    assert not live.exists()
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    assert gc_staging(tmp_path / "absent") == [] and not (tmp_path / "absent").exists()
