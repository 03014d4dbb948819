"""Crafted (hostile) tar members, layers and layout edits for the image hardening tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ZERO_BLOCK = b"\0" * 512


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    d = layout / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / sha(data).split(":")[1]).write_bytes(data)
    return {"digest": sha(data), "size": len(data)}


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def header(name: str, typ: bytes, size: int, *, raw_size: bytes | None = None) -> bytes:
    """One ustar header block; ``raw_size`` replaces the 12-byte size field as given (for
    base-256 values), with the checksum recomputed."""
    ti = tarfile.TarInfo(name)
    ti.type = typ
    ti.size = size if raw_size is None else 0
    buf = bytearray(ti.tobuf(tarfile.USTAR_FORMAT if raw_size is None else tarfile.GNU_FORMAT))
    buf = buf[:512]
    if raw_size is not None:
        buf[124:136] = raw_size
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def negative_size(n: int = 512) -> bytes:
    """The 12-byte base-256 encoding of ``-n`` (CVE-2025-8194)."""
    return b"\xff" + ((256 ** 11) - n).to_bytes(11, "big")


def negative_size_tar() -> bytes:
    """A tar whose first member declares size -512: unpatched tarfile seeks back onto the
    same header for ever."""
    return header("loop", tarfile.REGTYPE, 0, raw_size=negative_size()) + ZERO_BLOCK * 4


def huge_extended_header_tar(typ: bytes, size: int = 2 << 30) -> bytes:
    """A tar starting with an extended header (PAX or GNU long name) that claims ``size``
    bytes; the data is absent, a reader that trusts it allocates it all."""
    return header("././@LongLink", typ, size) + ZERO_BLOCK * 4


def gnu_sparse_tar() -> bytes:
    return header("sparse", tarfile.GNUTYPE_SPARSE, 0) + ZERO_BLOCK * 4


def gzip_zeros_layer(name: str, size: int, files: int = 1) -> bytes:
    """A gzip layer holding ``files`` files (``name``, ``name.1``, ...) of ``size`` zero bytes
    in all (a few KB per 10 MB), built without holding it in memory."""
    out = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    each = size // files
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as z:
        for i in range(files):
            ti = tarfile.TarInfo(name if i == 0 else f"{name}.{i}")
            ti.size = each
            z.write(ti.tobuf(tarfile.PAX_FORMAT))
            left = each
            while left:
                n = min(left, len(chunk))
                z.write(chunk[:n])
                left -= n
            z.write(b"\0" * ((-each) % 512))
        z.write(ZERO_BLOCK * 2)
    return out.getvalue()


def raw_layer_diff(layer: bytes) -> str:
    return sha(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer)


def image_manifest(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(index.json, the image manifest)`` of a layout made by ``oci_layout`` (not nested)."""
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][-1]
    return index, json.loads(blob_path(layout, desc["digest"]).read_bytes())


def rewrite_manifest(layout: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the image manifest and store it as a new, correctly addressed
    blob: only what ``edit`` changed is a lie."""
    index, manifest = image_manifest(layout)
    edit(manifest)
    data = json.dumps(manifest).encode()
    index["manifests"][-1].update(put_blob(layout, data))
    (layout / "index.json").write_text(json.dumps(index))


def edit_index(layout: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    index = json.loads((layout / "index.json").read_text())
    edit(index["manifests"][-1])
    (layout / "index.json").write_text(json.dumps(index))


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def dir_entry(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti


def file_entry(name: str, size: int = 0, **attrs: Any) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti
