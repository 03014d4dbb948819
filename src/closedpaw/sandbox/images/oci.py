"""Import real OCI images: an OCI image layout (a directory or a tar of one), a docker-archive
tarball (``docker save``), or ``docker://REF`` fetched with skopeo into a layout first.

Layers are applied in order by our own strict unpacker, never by ``tarfile.extract``:

* every blob is checked against its sha256 digest before it is used;
* a member whose name is absolute or holds ``..``, a hard link that points outside the image or
  at a non-file, a path that would pass through a symbolic link, and any device node are
  refused (:class:`ImageRejected`) and nothing is installed;
* whiteouts (``.wh.NAME``) delete from lower layers, opaque whiteouts (``.wh..wh..opq``) hide
  a directory's lower content; symlinks are created as they are (they resolve inside the
  sandbox only, since nothing on the host ever follows them);
* setuid and setgid bits are dropped (sandboxes run with ``noNewPrivileges`` anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from closedpaw.errors import ImageError, ImageRejected
from closedpaw.sandbox.images.store import IMAGE_NAME, Image, ImageStore, validate_name

__all__ = ["apply_layer", "import_image"]

_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
}
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"}
_REF = "org.opencontainers.image.ref.name"
_MAX_JSON = 16 << 20
_MAX_ENTRIES = 1_000_000


# -- reading a layout or archive ---------------------------------------------------------------
class _Source:
    """Files of an OCI layout or docker archive, from a directory or a tar file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_dir():
            return
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{path}: not an OCI layout directory nor a tar archive ({e})"
                             ) from None
        self._names = {self._norm(m.name): m for m in self._tar.getmembers()}

    @staticmethod
    def _norm(name: str) -> str:
        return name[2:] if name.startswith("./") else name

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        if self._tar is None:
            return (self.path / name).is_file()
        return name in self._names

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if ".." in name.split("/") or name.startswith("/"):
            raise ImageRejected(f"the image refers to {name!r}, outside itself")
        if self._tar is None:
            p = self.path / name
            if p.is_symlink() or not p.is_file():
                raise ImageRejected(f"{name} is missing from {self.path} or not a plain file")
            if not p.resolve().is_relative_to(self.path.resolve()):
                raise ImageRejected(f"{name} leads out of {self.path} through a symbolic link")
            with open(p, "rb") as f:
                yield f
            return
        m = self._names.get(name)
        if m is None or not m.isfile():
            raise ImageRejected(f"{name} is missing from {self.path} or not a plain file")
        f2 = self._tar.extractfile(m)
        assert f2 is not None
        with f2:
            yield f2

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise ImageRejected(f"{name} is larger than {_MAX_JSON} bytes")
        try:
            return json.loads(data)
        except ValueError:
            raise ImageRejected(f"{name} is not valid JSON") from None


def _blob_name(digest: object) -> str:
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ImageRejected(f"unsupported or malformed digest {digest!r} (sha256 only)")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _verified(src: _Source, name: str, digest: str | None, workdir: Path) -> Path:
    """Copy a blob to a file in ``workdir``, checking its digest; the caller removes it."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix="layer-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as out, src.open(name) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if digest is not None and "sha256:" + h.hexdigest() != digest:
            raise ImageRejected(f"blob {name} does not match its digest {digest}")
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


# -- applying one layer ----------------------------------------------------------------------
def _clean_name(name: str, what: str = "entry") -> str:
    if "\0" in name:
        raise ImageRejected(f"layer {what} {name!r} holds a NUL byte")
    if name.startswith("/"):
        raise ImageRejected(f"layer {what} {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageRejected(f"layer {what} {name!r} climbs out with '..'")
    return "/".join(parts)


def _parent_dir(root: Path, rel: str) -> Path:
    """Create and return the parent of ``rel``; refuse any component that is not a real
    directory (a symlink would let a later entry write outside the image)."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ImageRejected(f"layer entry {rel!r} would be written through the symbolic "
                                f"link {cur.relative_to(root)}")
        if not stat.S_ISDIR(st.st_mode):
            raise ImageRejected(f"layer entry {rel!r}: {cur.relative_to(root)} is not a "
                                "directory")
    return cur


def _remove(p: Path) -> None:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def apply_layer(root: Path, layer: IO[bytes]) -> int:
    """Apply one (possibly compressed) layer tar stream to ``root``; return entry count."""
    created: set[str] = set()     # paths this layer made: opaque whiteouts spare them
    count = 0
    try:
        tar = tarfile.open(fileobj=layer, mode="r|*")  # noqa: SIM115 - the with below
    except tarfile.TarError as e:
        raise ImageRejected(f"a layer is not a tar archive ({e})") from None
    with tar:
        try:
            for m in tar:
                count += 1
                if count > _MAX_ENTRIES:
                    raise ImageRejected(f"a layer has more than {_MAX_ENTRIES} entries")
                _apply_member(root, tar, m, created)
        except tarfile.TarError as e:
            raise ImageRejected(f"a layer is a broken tar archive ({e})") from None
    return count


def _apply_member(root: Path, tar: tarfile.TarFile, m: tarfile.TarInfo,
                  created: set[str]) -> None:
    rel = _clean_name(m.name)
    if m.ischr() or m.isblk():
        raise ImageRejected(f"layer entry {m.name!r} is a device node; images may not "
                            "carry devices")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
        raise ImageRejected(f"layer entry {m.name!r} has an unsupported type {m.type!r}")
    if not rel:  # the layer's root directory itself
        return
    base = rel.rsplit("/", 1)[-1]
    parent = _parent_dir(root, rel)
    if base == ".wh..wh..opq":
        prefix = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        for e in list(parent.iterdir()):
            if prefix + e.name not in created:
                _remove(e)
        return
    if base.startswith(".wh."):
        target = base[len(".wh."):]
        if target in ("", ".", ".."):
            raise ImageRejected(f"layer entry {m.name!r} is a malformed whiteout")
        _remove(parent / target)
        return
    path = parent / base
    mode = m.mode & (0o1777 if m.isdir() else 0o777)   # setuid/setgid dropped
    existing: os.stat_result | None
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if m.isdir():
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            _remove(path)
            existing = None
        if existing is None:
            os.mkdir(path, 0o700)
    else:
        if existing is not None:
            _remove(path)
        if m.isfile():
            src = tar.extractfile(m)
            assert src is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif m.issym():
            if "\0" in m.linkname:
                raise ImageRejected(f"symlink {m.name!r} has a NUL byte in its target")
            os.symlink(m.linkname, path)
        elif m.islnk():
            target_rel = _clean_name(m.linkname, "hard link target")
            link_to = _parent_dir(root, target_rel) / target_rel.rsplit("/", 1)[-1]
            try:
                tst = os.lstat(link_to)
            except FileNotFoundError:
                raise ImageRejected(f"hard link {m.name!r} points at a missing "
                                    f"{m.linkname!r}") from None
            if not stat.S_ISREG(tst.st_mode):
                raise ImageRejected(f"hard link {m.name!r} points at {m.linkname!r}, "
                                    "which is not a regular file")
            os.link(link_to, path, follow_symlinks=False)
        else:  # fifo
            os.mkfifo(path, 0o600)
    created.add(rel)
    if m.islnk():
        return  # a hard link shares its target's inode, owner and mode
    os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, mode)


# -- whole images ----------------------------------------------------------------------------
def _pick(entries: Any, ref: str | None, where: str) -> dict[str, Any]:
    if not isinstance(entries, list) or not entries:
        raise ImageRejected(f"{where} lists no images")
    if ref is not None:
        for e in entries:
            names = [e.get("annotations", {}).get(_REF, "")] if isinstance(e, dict) else []
            names += [t for t in (e.get("RepoTags") or []) if isinstance(t, str)] \
                if isinstance(e, dict) else []
            if ref in names or any(n.endswith(":" + ref) for n in names if n):
                return dict(e)
        raise ImageError(f"{where} has no image {ref!r}")
    if len(entries) > 1:
        raise ImageError(f"{where} holds {len(entries)} images; choose one with --ref")
    if not isinstance(entries[0], dict):
        raise ImageRejected(f"{where} is malformed")
    return dict(entries[0])


def _oci_layers(src: _Source, ref: str | None
                ) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    index = src.json("index.json")
    entry = _pick(index.get("manifests") if isinstance(index, dict) else None, ref,
                  "index.json")
    info = {"manifest": entry.get("digest"), "ref": entry.get("annotations", {}).get(_REF)}
    for _ in range(4):  # an index may point at a platform index
        if entry.get("mediaType") not in _INDEX_TYPES:
            break
        sub = src.json(_blob_name(entry.get("digest")))
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine,
                                                           os.uname().machine)
        cands = [m for m in sub.get("manifests", [])
                 if m.get("platform", {}).get("os") == "linux"
                 and m.get("platform", {}).get("architecture") == arch]
        if not cands:
            raise ImageError(f"the image index has no linux/{arch} image")
        entry = dict(cands[0])
    manifest = src.json(_blob_name(entry.get("digest")))
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise ImageRejected("the image manifest has no layer list")
    out: list[tuple[str, str | None]] = []
    for layer in layers:
        mt = layer.get("mediaType", "")
        if mt not in _LAYER_TYPES:
            raise ImageError(f"layer media type {mt!r} is not supported (tar or tar+gzip)")
        out.append((_blob_name(layer.get("digest")), layer["digest"]))
    return out, info


def _docker_layers(src: _Source, ref: str | None
                   ) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    entry = _pick(src.json("manifest.json"), ref, "manifest.json")
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise ImageRejected("manifest.json has no layer list")
    # Legacy archives name layers <id>/layer.tar; the config's diff_ids (digests of the
    # uncompressed layers) are what vouches for them.
    config_name = entry.get("Config")
    if not isinstance(config_name, str):
        raise ImageRejected("manifest.json names no image config")
    config = src.json(_clean_name(config_name, "config file"))
    diff_ids = config.get("rootfs", {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise ImageRejected("the image config's rootfs.diff_ids do not match the layer list")
    out: list[tuple[str, str | None]] = []
    for name, diff_id in zip(layers, diff_ids, strict=True):
        clean = _clean_name(name, "layer file")
        m = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", clean)
        if m is None:
            _blob_name(diff_id)  # validates its form
        out.append((clean, f"sha256:{m.group(1)}" if m else str(diff_id)))
    tags = entry.get("RepoTags") or []
    return out, {"ref": tags[0] if tags else None}


def _derive_name(path: str, ref: str | None) -> str:
    base = ref or Path(path.rstrip("/")).name
    base = base.rsplit("/", 1)[-1].split("@")[0]
    base = re.sub(r"\.(tar|tgz|tar\.gz|oci)$", "", base).replace(":", "-").lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._")[:63]
    if not IMAGE_NAME.match(base):
        raise ImageError(f"cannot derive an image name from {path!r}; pass --name")
    return base


def _fetch(ref: str, dest: Path) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ImageError("docker:// import needs skopeo: 'apt-get install skopeo' "
                         "('make deps' installs it)")
    p = subprocess.run([skopeo, "copy", "--quiet", ref, f"oci:{dest}:image"],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise ImageError(f"skopeo copy {ref} failed: {' '.join(p.stderr.split())[:400]}")


def import_image(store: ImageStore, path: str | Path, *, name: str | None = None,
                 ref: str | None = None) -> Image:
    """Import an OCI layout (dir or tar), a docker-archive tar or ``docker://REF``."""
    spath = str(path)
    name = validate_name(name or _derive_name(spath, ref), "--name")
    if os.geteuid() != 0:
        raise ImageError("importing images needs root (file owners of the layers are kept)")
    # Downloads and layer copies stay on the store's filesystem (/tmp may be a small tmpfs).
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-fetch-", dir=store.root) as fetched:
        if spath.startswith("docker://"):
            _fetch(spath, Path(fetched) / "layout")
            src_path, kind = Path(fetched) / "layout", "registry"
            ref = "image"
        else:
            src_path = Path(spath)
            if not src_path.exists():
                raise ImageError(f"{spath}: no such file or directory")
            kind = ""
        src = _Source(src_path)
        try:
            if src.exists("index.json") and src.exists("oci-layout"):
                layers, info = _oci_layers(src, ref)
                kind = kind or "oci-layout"
            elif src.exists("manifest.json"):
                dlayers, info = _docker_layers(src, ref)
                layers = list(dlayers)
                kind = kind or "docker-archive"
            else:
                raise ImageError(f"{spath} is neither an OCI image layout (oci-layout, "
                                 "index.json) nor a docker archive (manifest.json)")
            with store.lock(), store.staging(name) as staged:
                rootfs = staged / "rootfs"
                rootfs.mkdir(mode=0o755)
                for blob, digest in layers:
                    tmp = _verified(src, blob, digest, staged)
                    try:
                        with open(tmp, "rb") as f:
                            apply_layer(rootfs, f)
                    finally:
                        os.unlink(tmp)
                source = {"type": kind,
                          "path": str(src_path.absolute()) if kind != "registry" else None,
                          "layers": len(layers), **{k: v for k, v in info.items() if v}}
                if kind == "registry":
                    source["ref"] = spath
                return store.install(name, staged, source)
        finally:
            src.close()
