"""Hand-made OCI image layouts and docker archives for the import tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    """One layer member: kind is file, dir, symlink, hardlink, chr, blk or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def layer_tar(entries: Sequence[Entry], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.mode, ti.uid, ti.gid = e.mode, e.uid, e.gid
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
                       "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                       "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                       "fifo": tarfile.FIFOTYPE}[e.kind]
            if e.kind in ("symlink", "hardlink"):
                ti.linkname = e.target
            if e.kind in ("chr", "blk"):
                ti.devmajor, ti.devminor = 1, 3
            if e.kind == "file":
                ti.size = len(e.data)
                t.addfile(ti, io.BytesIO(e.data))
            else:
                t.addfile(ti)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def _diff_id(data: bytes, gz: bool) -> str:
    """The digest of a layer's uncompressed stream, decompressed piecewise (bombs stay
    small in memory)."""
    if not gz:
        return f"sha256:{hashlib.sha256(data).hexdigest()}"
    h = hashlib.sha256()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as z:
        while chunk := z.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _blob(root: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    d = root / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / digest).write_bytes(data)
    return f"sha256:{digest}"


def oci_layout(root: Path, layers: Sequence[bytes], *, ref: str = "latest",
               gz: Sequence[bool] | None = None, nested: bool = False,
               extra_refs: Sequence[str] = ()) -> Path:
    """Write an OCI image layout at ``root`` with ``layers`` (raw or gzip tar bytes).
    ``nested`` puts the manifest behind a multi-platform image index (as registries do);
    ``extra_refs`` adds more names for other (empty) images to the layout's index."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    gz = gz or [False] * len(layers)
    diff_ids = [_diff_id(d, z) for d, z in zip(layers, gz, strict=True)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/bin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cdigest = _blob(root, config)
    lays = []
    for data, z in zip(layers, gz, strict=True):
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if z else "")
        lays.append({"mediaType": mt, "digest": _blob(root, data), "size": len(data)})
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdigest, "size": len(config)},
                           "layers": lays}).encode()
    mdigest = _blob(root, manifest)
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": mdigest, "size": len(manifest)}
    if nested:
        other = dict(entry, platform={"os": "linux", "architecture": "s390x"})
        index = json.dumps({"schemaVersion": 2, "manifests": [
            other, dict(entry, platform={"os": "linux", "architecture": "amd64"})]}).encode()
        entry = {"mediaType": "application/vnd.oci.image.index.v1+json",
                 "digest": _blob(root, index), "size": len(index)}
    empty_config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    empty = json.dumps({"schemaVersion": 2, "layers": [], "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": _blob(root, empty_config), "size": len(empty_config)}}).encode()
    others = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": _blob(root, empty), "size": len(empty),
               "annotations": {"org.opencontainers.image.ref.name": r}} for r in extra_refs]
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [*others, dict(entry, annotations={
            "org.opencontainers.image.ref.name": ref})]}))
    return root


def docker_archive(path: Path, layers: Sequence[bytes], tag: str = "demo:1",
                   diff_ids: Sequence[str] | None = None) -> Path:
    """Write a legacy ``docker save`` style tarball with uncompressed ``layers``; the config's
    diff_ids are their digests unless given."""
    def add(t: tarfile.TarFile, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))

    if diff_ids is None:
        diff_ids = [f"sha256:{hashlib.sha256(d).hexdigest()}" for d in layers]
    with tarfile.open(path, "w") as t:
        names = []
        for i, data in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            add(t, names[-1], data)
        add(t, "config.json", json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": list(diff_ids)}}).encode())
        add(t, "manifest.json", json.dumps([{"Config": "config.json", "RepoTags": [tag],
                                             "Layers": names}]).encode())
    return path


def tar_tree(src: Path) -> bytes:
    """A layer holding the whole tree at ``src`` (as root, keeping owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for p in sorted(src.iterdir()):
            t.add(p, arcname=p.name, recursive=True)
    return buf.getvalue()
