"""Crafted images the importer must refuse with one line, leaving nothing behind: tampered
manifest, index and config blobs, size and mediaType lies, diff_ids in every docker-archive
layout, malformed JSON types, huge owners, deep JSON, each ImportLimits limit, names with a
trailing newline. (Bombs measured for time and memory in a subprocess are in
tests/integration/test_image_bombs.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import ImageError, ImageRejected, SpecError
from closedpaw.sandbox.images.limits import ImportLimits
from closedpaw.sandbox.images.oci import import_image
from closedpaw.sandbox.images.store import ImageStore, validate_name
from closedpaw.sandbox.spec import SandboxSpec
from tests.image_craft import (
    blob_path,
    dir_entry,
    edit_index,
    file_entry,
    gnu_sparse_tar,
    gzip_zeros_layer,
    huge_extended_header_tar,
    image_manifest,
    negative_size_tar,
    put_blob,
    rewrite_manifest,
    sha,
    tar_of,
)
from tests.oci_support import Entry, layer_tar, oci_layout

GOOD = [Entry("etc", "dir", mode=0o755), Entry("etc/motd", data=b"hello\n")]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    if os.geteuid() != 0:
        pytest.fail("image import keeps file owners and needs root: run 'make test' as root",
                    pytrace=False)
    return ImageStore(tmp_path / "images")


def refused(store: ImageStore, path: Path, match: str, limits: ImportLimits | None = None,
            exc: type[ImageError] = ImageRejected) -> str:
    """Import must fail with one line matching ``match``; nothing may be left in the store."""
    kw: dict[str, Any] = {"limits": limits} if limits else {}
    with pytest.raises(exc, match=match) as ei:
        import_image(store, path, name="evil", **kw)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert store.list() == []
    left = sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []
    assert left in ([], [".lock"]), f"left in the store: {left}"
    return msg


# -- every blob checked ----------------------------------------------------------------------
def test_a_tampered_manifest_blob_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    other = oci_layout(tmp_path / "o", [layer_tar([Entry("planted", data=b"evil")])])
    _, evil_manifest = image_manifest(other)
    # Copy the other image's blobs in and put its manifest under the legitimate digest.
    for p in (other / "blobs" / "sha256").iterdir():
        put_blob(layout, p.read_bytes())
    index, _ = image_manifest(layout)
    target = blob_path(layout, index["manifests"][-1]["digest"])
    data = json.dumps(evil_manifest).encode()
    target.write_bytes(data)
    edit_index(layout, lambda d: d.update(size=len(data)))  # even a matching size
    refused(store, layout, "the image manifest .* does not match its digest")


def test_a_tampered_nested_index_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)], nested=True)
    index = json.loads((layout / "index.json").read_text())
    nested = blob_path(layout, index["manifests"][-1]["digest"])
    doc = json.loads(nested.read_bytes())
    doc["manifests"].reverse()
    data = json.dumps(doc).encode()
    assert len(data) == nested.stat().st_size
    nested.write_bytes(data)
    refused(store, layout, "nested image index .* does not match its digest")


def test_a_tampered_config_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    _, manifest = image_manifest(layout)
    cfg = blob_path(layout, manifest["config"]["digest"])
    data = cfg.read_bytes().replace(b"amd64", b"arm64")
    cfg.write_bytes(data)
    refused(store, layout, "image config .* does not match its digest")


@pytest.mark.parametrize("where", ["index", "layer", "config"])
def test_size_lies_are_refused(store: ImageStore, tmp_path: Path, where: str) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    if where == "index":
        edit_index(layout, lambda d: d.update(size=d["size"] - 1))
    elif where == "layer":
        rewrite_manifest(layout, lambda m: m["layers"][0].update(size=m["layers"][0]["size"]
                                                                   + 512))
    else:
        rewrite_manifest(layout, lambda m: m["config"].update(size=1))
    refused(store, layout, "bytes but its descriptor says")


@pytest.mark.parametrize("size", ["12", -1, 1.5, None, True])
def test_malformed_sizes_are_refused(store: ImageStore, tmp_path: Path, size: object) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    edit_index(layout, lambda d: d.update(size=size))
    refused(store, layout, "is not a byte count")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: m["layers"][0].update(mediaType="application/vnd.oci.image.layer.v1.tar+gzip"),
     "is not gzip but its media type says tar\\+gzip"),
    (lambda m: m["layers"][0].update(mediaType="application/vnd.oci.image.layer.v1.tar+zstd"),
     "media type"),
    (lambda m: m["config"].update(mediaType="application/octet-stream"), "media type"),
    (lambda m: m.update(mediaType="application/vnd.oci.image.index.v1+json"),
     "says it is .* but its descriptor says"),
])
def test_media_type_lies_are_refused(store: ImageStore, tmp_path: Path, edit: Any,
                                     match: str) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    rewrite_manifest(layout, edit)
    refused(store, layout, match)


def test_an_index_entry_of_an_unknown_media_type_is_refused(store: ImageStore,
                                                            tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    edit_index(layout, lambda d: d.update(mediaType="text/plain"))
    refused(store, layout, "media type 'text/plain'")


def test_a_gzip_layer_typed_as_plain_tar_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD, gz=True)], gz=[False])
    refused(store, layout, "is gzip but its media type says tar")


def test_oci_diff_ids_are_checked(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD, gz=True)], gz=[True])
    _, manifest = image_manifest(layout)
    cfg = json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())
    cfg["rootfs"]["diff_ids"] = [sha(b"something else")]
    data = json.dumps(cfg).encode()
    rewrite_manifest(layout, lambda m: m["config"].update(put_blob(layout, data)))
    refused(store, layout, "does not match the config's diff_id")


def docker_blobs_archive(path: Path, layer: bytes, diff_id: str,
                         config_name: str | None = None) -> Path:
    """A ``docker save`` of the newer kind: layers and config under blobs/sha256/."""
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    files = {f"blobs/sha256/{hashlib.sha256(layer).hexdigest()}": layer}
    cname = config_name or f"blobs/sha256/{hashlib.sha256(config).hexdigest()}"
    files[cname] = config
    files["manifest.json"] = json.dumps([{"Config": cname, "RepoTags": ["d:1"],
                                          "Layers": [next(iter(files))]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


def test_docker_archive_blob_layers_are_checked_against_diff_ids(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    good = layer_tar(GOOD, gz=True)
    raw = layer_tar(GOOD)
    # A gzip layer under blobs/: its blob digest matches, its diff_id is checked too.
    ok = docker_blobs_archive(tmp_path / "ok.tar", good, sha(raw))
    assert import_image(store, ok, name="ok").source["type"] == "docker-archive"
    evil = docker_blobs_archive(tmp_path / "evil.tar", good, sha(b"not this layer"))
    refused_store = ImageStore(tmp_path / "other")
    refused(refused_store, evil, "does not match the config's diff_id")


def test_a_docker_config_named_by_digest_is_checked(store: ImageStore, tmp_path: Path) -> None:
    raw = layer_tar(GOOD)
    arch = docker_blobs_archive(tmp_path / "a.tar", raw, sha(raw),
                                config_name="0" * 64 + ".json")
    refused(store, arch, "image config .* does not match its digest")


# -- malformed input: one line, never a traceback ------------------------------------------
@pytest.mark.parametrize(("index", "match"), [
    ({"manifests": "x"}, "lists no images"),
    ({"manifests": [1]}, "malformed"),
    ([], "lists no images"),
    ({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "digest": 5, "size": 1}]}, "malformed digest"),
    ({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "digest": "sha256:" + "0" * 64, "size": 1, "annotations": "x"}]},
     "missing from"),
])
def test_malformed_index_types(store: ImageStore, tmp_path: Path, index: Any,
                               match: str) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    (layout / "index.json").write_text(json.dumps(index))
    refused(store, layout, match)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: m.update(layers={"a": 1}), "no layer list"),
    (lambda m: m.update(layers=[5]), "not an object"),
    (lambda m: m.update(config=[]), "not an object"),
    (lambda m: m["layers"][0].update(digest="sha512:" + "0" * 128), "sha256 only"),
])
def test_malformed_manifest_types(store: ImageStore, tmp_path: Path, edit: Any,
                                  match: str) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    rewrite_manifest(layout, edit)
    refused(store, layout, match)


def test_deep_json_is_one_line(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    (layout / "index.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(store, layout, "nested too deeply")


@pytest.mark.parametrize("owner", [{"uid": 1 << 40}, {"gid": (1 << 32) - 1},
                                   {"uid": 1 << 70}])
def test_huge_owners_are_refused(store: ImageStore, tmp_path: Path,
                                 owner: dict[str, int]) -> None:
    layer = tar_of([(file_entry("f", 1, **owner), b"x")])
    layout = oci_layout(tmp_path / "l", [layer])
    refused(store, layout, "owner out of range")


# -- limits ----------------------------------------------------------------------------------
def test_negative_size_in_a_layer_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [negative_size_tar()])
    refused(store, layout, "negative size")


@pytest.mark.parametrize("typ", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                                 tarfile.GNUTYPE_LONGLINK])
def test_huge_extended_headers_are_refused(store: ImageStore, tmp_path: Path,
                                           typ: bytes) -> None:
    layout = oci_layout(tmp_path / "l", [huge_extended_header_tar(typ)])
    refused(store, layout, "extended tar header of 2147483648 bytes exceeds")


def test_sparse_members_are_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [gnu_sparse_tar()])
    refused(store, layout, "sparse files are not supported")


def test_unpacked_bytes_are_bounded(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [gzip_zeros_layer("zeros", 64 << 20)], gz=[True])
    refused(store, layout, "unpacks to more than", ImportLimits(max_unpacked_bytes=16 << 20))


def test_file_size_is_bounded(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [gzip_zeros_layer("big", 8 << 20)], gz=[True])
    refused(store, layout, "per file", ImportLimits(max_file_bytes=4 << 20))


def test_members_layers_depth_and_json_size_are_bounded(store: ImageStore,
                                                        tmp_path: Path) -> None:
    many = tar_of([(file_entry(f"f{i}"), b"") for i in range(300)])
    refused(store, oci_layout(tmp_path / "a", [many]), "more than 200 members",
            ImportLimits(max_members=200))
    layers = [layer_tar([Entry(f"f{i}", data=b"x")]) for i in range(5)]
    refused(store, oci_layout(tmp_path / "b", layers), "5 layers, more than 4",
            ImportLimits(max_layers=4))
    deep = tar_of([(dir_entry("/".join(["d"] * n)), None) for n in range(1, 40)])
    refused(store, oci_layout(tmp_path / "c", [deep]), "directories deep, more than 32",
            ImportLimits(max_depth=32))
    refused(store, oci_layout(tmp_path / "d", [layer_tar(GOOD)]), "limit of 100 for a JSON",
            ImportLimits(max_json_bytes=100))


def test_the_deadline_ends_an_import(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [gzip_zeros_layer("zeros", 256 << 20)], gz=[True])
    refused(store, layout, "longer than its deadline of 0.05 s",
            ImportLimits(deadline_s=0.05))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        ImportLimits(max_depth=0)


def test_hard_links_count_once_and_hash_once(store: ImageStore, tmp_path: Path) -> None:
    data = os.urandom(256 << 10)

    def image(links: bool) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        members: list[tuple[tarfile.TarInfo, bytes | None]] = [
            (file_entry("big", len(data)), data)]
        for i in range(100):
            if links:
                ti = tarfile.TarInfo(f"link{i}")
                ti.type, ti.linkname = tarfile.LNKTYPE, "big"
                members.append((ti, None))
            else:
                members.append((file_entry(f"link{i}", len(data)), data))
        return members

    # 100 links of 256 KiB would be 25 MiB if each counted; the limit is 1 MiB.
    img = import_image(store, oci_layout(tmp_path / "l", [tar_of(image(True))]), name="links",
                       limits=ImportLimits(max_unpacked_bytes=1 << 20))
    assert os.stat(img.rootfs / "link7").st_nlink == 101
    assert store.verify("links")
    # Hashing a file once per inode gives the digest of hashing every link.
    copies = import_image(store, oci_layout(tmp_path / "c", [tar_of(image(False))]),
                          name="copies")
    assert os.stat(copies.rootfs / "link7").st_nlink == 1
    assert copies.digest == img.digest


def test_many_opaque_whiteouts_are_linear(store: ImageStore, tmp_path: Path) -> None:
    n = 5000
    lower = tar_of([(dir_entry("d"), None), *[(file_entry(f"d/old{i}"), b"")
                                              for i in range(n)]])
    upper = tar_of([(dir_entry("d"), None), *[m for i in range(n) for m in (
        (file_entry(f"d/new{i}"), b""), (file_entry("d/.wh..wh..opq"), b""))]])
    img = import_image(store, oci_layout(tmp_path / "l", [lower, upper]), name="opq")
    names = os.listdir(img.rootfs / "d")
    assert len(names) == n and all(x.startswith("new") for x in names)


# -- names -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["python\n", "host\n", "a\nb", "x" * 64, "", "-x"])
def test_names_are_matched_whole(store: ImageStore, tmp_path: Path, bad: str) -> None:
    with pytest.raises(SpecError):
        validate_name(bad)
    with pytest.raises(SpecError):
        SandboxSpec(image=bad)
    layout = oci_layout(tmp_path / "l", [layer_tar(GOOD)])
    with pytest.raises(SpecError):
        import_image(store, layout, name=bad or "\n")   # "" means: derive the name
    with pytest.raises(SpecError):
        store.get(bad)


def test_spec_env_and_code_names_are_matched_whole() -> None:
    with pytest.raises(SpecError):
        SandboxSpec(env={"A\n": "1"})


def test_a_tampered_layer_is_refused_before_anything_is_unpacked(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [gzip_zeros_layer("z", 64 << 20, files=64)],
                        gz=[True])
    _, manifest = image_manifest(layout)
    blob = blob_path(layout, manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[-9] ^= 1                      # the gzip trailer's CRC: only the very end differs
    blob.write_bytes(bytes(data))
    # Unpacking first would stop at the 16 MiB limit; the digest is checked before.
    refused(store, layout, "layer 1 .* does not match its digest",
            ImportLimits(max_unpacked_bytes=16 << 20))
