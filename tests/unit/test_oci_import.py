"""Importing OCI layouts and docker archives with our strict unpacker: layer order,
whiteouts, opaque directories, symlinks, hard links; and refusal of layers that try to escape
the image directory or carry devices, leaving the host and the store unchanged."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from closedpaw.errors import ImageError, ImageRejected
from closedpaw.sandbox.images.oci import import_image
from closedpaw.sandbox.images.store import ImageStore
from tests.oci_support import Entry, docker_archive, layer_tar, oci_layout

BASE = [
    Entry("etc", "dir", mode=0o755),
    Entry("etc/motd", data=b"layer one\n"),
    Entry("gone.txt", data=b"deleted by layer two\n"),
    Entry("keep", "dir", mode=0o755),
    Entry("keep/a", data=b"a\n"),
    Entry("keep/b", data=b"b\n"),
    Entry("bin", "dir", mode=0o755),
    Entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
    Entry("replaced", "dir", mode=0o755),
    Entry("replaced/x", data=b"x\n"),
]
TOP = [
    Entry(".wh.gone.txt"),
    Entry("keep/new", data=b"new\n"),  # before the opaque marker: must survive it
    Entry("keep/.wh..wh..opq"),
    Entry("etc/motd", data=b"layer two\n", mode=0o600, uid=1000, gid=1000),
    Entry("motd-link", "symlink", target="/etc/motd"),
    Entry("rel-link", "symlink", target="../etc/motd"),
    Entry("etc/motd-hard", "hardlink", target="etc/motd"),
    Entry("replaced", data=b"now a file\n"),
    Entry("pipe", "fifo", mode=0o600),
]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    if os.geteuid() != 0:
        pytest.fail("image import keeps file owners and needs root: run 'make test' as root",
                    pytrace=False)
    return ImageStore(tmp_path / "images")


def check_imported(store: ImageStore, name: str) -> None:
    img = store.get(name)
    r = img.rootfs
    assert (r / "etc/motd").read_bytes() == b"layer two\n"      # layer order
    st = os.lstat(r / "etc/motd")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1000, 1000)
    assert not (r / "gone.txt").exists()                        # whiteout
    assert sorted(os.listdir(r / "keep")) == ["new"]            # opaque whiteout
    assert os.readlink(r / "motd-link") == "/etc/motd"          # symlinks kept as they are
    assert os.readlink(r / "rel-link") == "../etc/motd"
    assert os.lstat(r / "etc/motd-hard").st_ino == st.st_ino    # hard link
    assert (r / "replaced").read_bytes() == b"now a file\n"     # dir replaced by a file
    assert stat.S_ISFIFO(os.lstat(r / "pipe").st_mode)
    assert stat.S_IMODE(os.lstat(r / "bin/tool").st_mode) == 0o755  # setuid dropped
    assert not any(n.startswith(".wh.") for _, _, fs in os.walk(r) for n in fs)
    for d in ("proc", "dev", "sys", "input", "output", "code"):  # ready for sandboxes
        assert (r / d).is_dir()
    assert stat.S_IMODE(os.lstat(r / "tmp").st_mode) == 0o1777
    assert img.digest.startswith("sha256:") and store.verify(name)


def test_oci_layout_with_whiteouts_symlinks_and_layer_order(store: ImageStore,
                                                            tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", [layer_tar(BASE, gz=True), layer_tar(TOP)],
                        gz=[True, False])
    img = import_image(store, layout, name="demo")
    assert img.source["type"] == "oci-layout" and img.source["layers"] == 2
    assert img.source["ref"] == "latest"
    check_imported(store, "demo")
    assert [i.name for i in store.list()] == ["demo"]


def test_oci_layout_as_a_tarball_and_name_derivation(store: ImageStore,
                                                     tmp_path: Path) -> None:
    import tarfile

    layout = oci_layout(tmp_path / "layout", [layer_tar(BASE), layer_tar(TOP)])
    archive = tmp_path / "My_Image.oci.tar"
    with tarfile.open(archive, "w") as t:
        t.add(layout, arcname=".")
    img = import_image(store, archive)
    assert img.name == "my_image.oci"
    check_imported(store, img.name)


def test_docker_archive(store: ImageStore, tmp_path: Path) -> None:
    arch = docker_archive(tmp_path / "saved.tar", [layer_tar(BASE), layer_tar(TOP)])
    img = import_image(store, arch, name="saved")
    assert img.source["type"] == "docker-archive" and img.source["ref"] == "demo:1"
    check_imported(store, "saved")


def test_reimport_replaces_and_rm_removes(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l1", [layer_tar([Entry("v", data=b"1")])])
    first = import_image(store, layout, name="x")
    layout2 = oci_layout(tmp_path / "l2", [layer_tar([Entry("v", data=b"2")])])
    second = import_image(store, layout2, name="x")
    assert first.digest != second.digest and (second.rootfs / "v").read_bytes() == b"2"
    store.remove("x")
    assert store.list() == [] and sorted(p.name for p in store.root.iterdir()) == [".lock"]


def host_snapshot(*paths: Path) -> dict[str, bool]:
    return {str(p): p.exists() or p.is_symlink() for p in paths}


MALICIOUS = {
    "dotdot": [Entry("../../escaped-dotdot", data=b"pwned")],
    "dotdot-deep": [Entry("etc/../../escaped-dotdot", data=b"pwned")],
    "absolute": [Entry("/tmp/closedpaw-escaped-abs", data=b"pwned")],
    "char-device": [Entry("dev/mem", "chr")],
    "block-device": [Entry("dev/sda", "blk")],
    "through-symlink": [Entry("evil", "symlink", target="/tmp"),
                        Entry("evil/closedpaw-escaped-link", data=b"pwned")],
    "hardlink-out": [Entry("passwd", "hardlink", target="../../../../etc/passwd")],
    "hardlink-abs": [Entry("passwd", "hardlink", target="/etc/passwd")],
    "hardlink-dir": [Entry("d", "dir"), Entry("d2", "hardlink", target="d")],
    "whiteout-dotdot": [Entry("a", "dir"), Entry("a/.wh...")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layers_are_refused_and_nothing_lands(store: ImageStore, tmp_path: Path,
                                                        case: str) -> None:
    victims = [tmp_path / "escaped-dotdot", Path("/tmp/closedpaw-escaped-abs"),
               Path("/tmp/closedpaw-escaped-link")]
    for v in victims:
        assert not v.exists(), f"{v} exists before the test"
    passwd = Path("/etc/passwd").stat()
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("ok", data=b"fine")]),
                                         layer_tar(MALICIOUS[case])])
    with pytest.raises(ImageRejected):
        import_image(store, layout, name="evil")
    for v in victims:
        assert not v.exists(), f"{case}: {v} was written on the host"
    assert Path("/etc/passwd").stat().st_nlink == passwd.st_nlink
    assert store.list() == []
    assert [p.name for p in store.root.iterdir()] == [".lock"], "staging left behind"


def test_a_docker_archive_layer_must_match_its_diff_id(store: ImageStore,
                                                      tmp_path: Path) -> None:
    good, evil = layer_tar([Entry("f", data=b"ok")]), layer_tar([Entry("f", data=b"evil")])
    bad = f"sha256:{hashlib.sha256(good).hexdigest()}"
    arch = docker_archive(tmp_path / "a.tar", [evil], diff_ids=[bad])
    with pytest.raises(ImageRejected, match=r"does not match the config.s diff_id"):
        import_image(store, arch, name="a")
    arch = docker_archive(tmp_path / "b.tar", [good], diff_ids=[])
    with pytest.raises(ImageRejected, match="diff_ids"):
        import_image(store, arch, name="b")
    assert store.list() == []


def test_a_layout_blob_linking_out_of_the_layout_is_refused(store: ImageStore,
                                                           tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("f", data=b"x")])])
    os.rename(layout / "blobs", tmp_path / "real-blobs")
    os.symlink(tmp_path / "real-blobs", layout / "blobs")
    with pytest.raises(ImageRejected, match="symbolic link"):
        import_image(store, layout, name="l")
    assert store.list() == []


def test_a_tampered_blob_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("f", data=b"original")])])
    blob = next(p for p in (layout / "blobs/sha256").iterdir()
                if p.read_bytes().startswith(b"f\0"))
    blob.write_bytes(layer_tar([Entry("f", data=b"tampered")]))
    with pytest.raises(ImageRejected, match="does not match its digest"):
        import_image(store, layout, name="t")
    assert store.list() == []


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p.mkdir(), "neither an OCI image layout"),
    (lambda p: p.write_bytes(b"not a tar"), "not an OCI layout directory nor a tar"),
])
def test_not_an_image(store: ImageStore, tmp_path: Path, make: object, match: str) -> None:
    target = tmp_path / "thing"
    make(target)  # type: ignore[operator]
    with pytest.raises(ImageError, match=match):
        import_image(store, target, name="x")


def test_missing_path_and_bad_names(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        import_image(store, tmp_path / "absent", name="x")
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("f")])])
    for bad in ("Upper", "../x", "host"):
        with pytest.raises((ImageError, ValueError)):
            import_image(store, layout, name=bad)
    assert store.list() == []


def test_skopeo_fetch_writes_a_layout_we_import(store: ImageStore, tmp_path: Path) -> None:
    """The docker:// path copies with skopeo into an OCI layout first; no registry is
    reachable in tests, so skopeo copies from a local layout through the same call."""
    import shutil

    from closedpaw.sandbox.images.oci import _fetch

    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed: 'apt-get install skopeo' (make test does this)",
                    pytrace=False)
    src = oci_layout(tmp_path / "src", [layer_tar(BASE, gz=True), layer_tar(TOP, gz=True)],
                     gz=[True, True])
    _fetch(f"oci:{src}:latest", tmp_path / "fetched")
    img = import_image(store, tmp_path / "fetched", name="fetched", ref="image")
    check_imported(store, "fetched")
    assert img.source["type"] == "oci-layout"
    with pytest.raises(ImageError, match="skopeo copy"):
        _fetch(f"oci:{tmp_path / 'absent'}:latest", tmp_path / "x")


def test_platform_index_and_choosing_among_several_images(store: ImageStore,
                                                          tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(BASE), layer_tar(TOP)], ref="v2",
                        nested=True, extra_refs=["v1"])
    with pytest.raises(ImageError, match="holds 2 images; choose one with --ref"):
        import_image(store, layout, name="multi")
    with pytest.raises(ImageError, match="no image 'v3'"):
        import_image(store, layout, name="multi", ref="v3")
    img = import_image(store, layout, name="multi", ref="v2")   # via the amd64 entry
    assert (img.source["ref"], img.source["layers"]) == ("v2", 2)
    check_imported(store, "multi")
    assert import_image(store, layout, name="empty", ref="v1").size >= 0


def test_preparing_an_image_never_writes_through_its_links(store: ImageStore,
                                                          tmp_path: Path) -> None:
    """Import writes /etc/hosts, hostname, resolv.conf and mount points into the image: an
    image whose /etc, /tmp or /etc/hosts links to a host path must not reach that path."""
    victim = tmp_path / "host-etc"
    victim.mkdir()
    (victim / "hosts").write_text("host's hosts\n")
    (victim / "tmpfile").write_text("host's file\n")
    stamp = {p.name: (p.read_text(), p.stat().st_mode) for p in victim.iterdir()}
    for_links = [
        [Entry("etc", "symlink", target=str(victim))],
        [Entry("etc", "symlink", target="../" * 20 + str(victim).lstrip("/"))],
    ]
    for i, layer in enumerate(for_links):
        layout = oci_layout(tmp_path / f"l{i}", [layer_tar(layer)])
        with pytest.raises(ImageRejected, match="not a directory"):
            import_image(store, layout, name=f"e{i}")
    layout = oci_layout(tmp_path / "ok", [layer_tar([
        Entry("etc", "dir", mode=0o755),
        Entry("etc/hosts", "symlink", target=str(victim / "hosts")),
        Entry("tmp", "symlink", target=str(victim)),
        Entry("input", "symlink", target=str(victim)),
    ])])
    img = import_image(store, layout, name="links")
    r = img.rootfs
    assert not (r / "etc/hosts").is_symlink() and "localhost" in (r / "etc/hosts").read_text()
    assert not (r / "tmp").is_symlink() and (r / "tmp").is_dir()
    assert not (r / "input").is_symlink()
    assert {p.name: (p.read_text(), p.stat().st_mode) for p in victim.iterdir()} == stamp
    assert [i.name for i in store.list()] == ["links"]
