"""Import real OCI images: an OCI image layout (a directory or a tar of one), a docker-archive
tarball (``docker save``), or ``docker://REF`` fetched with skopeo into a layout first.

Layers are applied in order by our own strict unpacker, never by ``tarfile.extract``:

* every blob (index, manifest, config, layer) is read as a stream, 1 MiB at a time, hashed
  and checked against its sha256 digest and its declared size before any of it is written,
  and a layer again while it is unpacked (so what is unpacked is what was checked); a
  layer's uncompressed stream is checked against the config's ``diff_ids`` too (every
  layout); a blob's
  ``mediaType`` must be one this importer knows for its place, and a layer must be what its
  type says (gzip or plain tar);
* a member whose name is absolute or holds ``..``, a hard link that points outside the image or
  at a non-file, a path that would pass through a symbolic link, any device node and any
  sparse file are refused (:class:`ImageRejected`) and nothing is installed;
* whiteouts (``.wh.NAME``) delete from lower layers, opaque whiteouts (``.wh..wh..opq``) hide
  a directory's lower content (once per directory and layer); symlinks are created as they
  are (they resolve inside the sandbox only, since nothing on the host ever follows them);
* setuid and setgid bits are dropped (sandboxes run with ``noNewPrivileges`` anyway);
* :class:`~closedpaw.sandbox.images.limits.ImportLimits` bounds unpacked bytes, file, blob,
  header and JSON sizes, member, layer and depth counts and the time taken; a tar header with
  a negative size (CPython's CVE-2025-8194 loop) is refused whatever the Python version.

The unpack happens in a staging directory locked by this process only; the store lock is
held just for the install (rename and manifest switch).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from closedpaw.errors import ImageError, ImageRejected
from closedpaw.sandbox.images.limits import DEFAULT_LIMITS, Deadline, ImportLimits
from closedpaw.sandbox.images.store import (
    IMAGE_NAME,
    Image,
    ImageStore,
    Progress,
    remove_at,
    validate_name,
)

__all__ = ["apply_layer", "import_image"]

_OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
_DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
_GZIP_LAYERS = {"application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.diff.tar.gzip"}
_LAYER_TYPES = {_OCI_TAR, _DOCKER_TAR, *_GZIP_LAYERS}
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"}
_MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json"}
_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                 "application/vnd.docker.container.image.v1+json"}
_REF = "org.opencontainers.image.ref.name"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_ID = (1 << 32) - 2          # uid/gid 2^32-1 is (uid_t)-1: "no change" to chown
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
             tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_MAX_CHAIN = 8                   # extended headers in a row before one real member
_CHUNK = 1 << 20


def _one_line(text: object, n: int = 200) -> str:
    return " ".join(str(text).split())[:n]


# -- tar headers, checked before tarfile acts on them ----------------------------------------
class _CheckedInfo(tarfile.TarInfo):
    """A TarInfo that refuses, before anything is read into memory or any offset moves:
    negative sizes (the CVE-2025-8194 endless loop), extended headers (PAX records, GNU long
    names) larger than the limit or chained without end, sparse members, and members past
    the count limit."""

    def _proc_member(self, tf: Any) -> Any:
        limits: ImportLimits = tf.cp_limits
        tf.cp_headers += 1
        if tf.cp_headers > tf.cp_max_headers:
            raise ImageRejected(f"{tf.cp_what} has more than {tf.cp_max_headers} "
                                "members (ImportLimits)")
        if self.size < 0:
            raise ImageRejected(f"{tf.cp_what}: a tar header declares a negative size "
                                "(CVE-2025-8194); refusing the archive")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ImageRejected(f"{tf.cp_what}: sparse files are not supported")
        chained = self.type in _EXTENDED
        if chained:
            if self.size > limits.max_header_bytes:
                raise ImageRejected(f"{tf.cp_what}: an extended tar header of "
                                    f"{self.size} bytes exceeds the limit of "
                                    f"{limits.max_header_bytes} (ImportLimits."
                                    "max_header_bytes)")
            tf.cp_chain += 1
            if tf.cp_chain > _MAX_CHAIN:
                raise ImageRejected(f"{tf.cp_what}: more than {_MAX_CHAIN} extended "
                                    "tar headers in a row")
        try:
            obj = super()._proc_member(tf)  # type: ignore[misc]
        finally:
            if chained:
                tf.cp_chain -= 1
        if obj.size < 0:
            raise ImageRejected(f"{tf.cp_what}: a tar header declares a negative size "
                                "(CVE-2025-8194); refusing the archive")
        if obj.sparse is not None:
            raise ImageRejected(f"{tf.cp_what}: sparse files are not supported")
        return obj



class _Tar(tarfile.TarFile):
    tarinfo = _CheckedInfo
    cp_limits: ImportLimits = DEFAULT_LIMITS
    cp_max_headers = DEFAULT_LIMITS.max_archive_members
    cp_what = "the archive"
    cp_headers = 0
    cp_chain = 0


def _tar_class(limits: ImportLimits, max_headers: int, what: str) -> type[_Tar]:
    return type("_Tar", (_Tar,), {"cp_limits": limits, "cp_max_headers": max_headers,
                                  "cp_what": what})


# -- streams ------------------------------------------------------------------------------------
class _Hashing:
    """Read from ``f`` at most ``limit`` bytes, hashing them as they pass; never reads more
    than 1 MiB at once, whatever the caller asks."""

    def __init__(self, f: Any, what: str, limit: int, deadline: Deadline,
                 prefix: bytes = b"") -> None:
        self.f, self.what, self.limit, self.deadline = f, what, limit, deadline
        self.h = hashlib.sha256()
        self.n = 0
        self.prefix = prefix

    def read(self, n: int | None = -1) -> bytes:
        want = _CHUNK if n is None or n < 0 else min(n, _CHUNK)
        if self.prefix:
            data, self.prefix = self.prefix[:want], self.prefix[want:]
            return data
        data = self.f.read(want)
        self.n += len(data)
        if self.n > self.limit:
            raise ImageRejected(f"{self.what} is larger than {self.limit} bytes")
        self.h.update(data)
        self.deadline.check()
        return bytes(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


# -- reading a layout or archive ---------------------------------------------------------------
class _Source:
    """Files of an OCI layout or docker archive, from a directory or a tar file."""

    def __init__(self, path: Path, limits: ImportLimits) -> None:
        self.path = path
        self.limits = limits
        self._tar: tarfile.TarFile | None = None
        self._dir_fd: int | None = None
        self._names: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            return
        cls = _tar_class(limits, limits.max_archive_members, str(path))
        try:
            self._tar = cls.open(path, "r:*")
            while (m := self._tar.next()) is not None:
                self._names[self._norm(m.name)] = m
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            self.close()
            raise ImageError(f"{path}: not an OCI layout directory nor a tar archive "
                             f"({_one_line(e)})") from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _norm(name: str) -> str:
        return name[2:] if name.startswith("./") else name

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def exists(self, name: str) -> bool:
        if self._dir_fd is None:
            return name in self._names
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                                .st_mode)
        except OSError:
            return False

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[tuple[IO[bytes], int]]:
        """``(file, size)`` of a plain file of the layout; no link is followed."""
        if ".." in name.split("/") or name.startswith("/"):
            raise ImageRejected(f"the image refers to {name!r}, outside itself")
        if self._dir_fd is not None:
            fd = self._dir_fd
            parts = [p for p in name.split("/") if p]
            opened: list[int] = []
            try:
                for part in parts[:-1]:
                    fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, dir_fd=fd)
                    opened.append(fd)
                ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                              | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                raise ImageRejected(f"{name} is missing from {self.path} or not a plain "
                                    "file (a symbolic link is never followed)") from None
            finally:
                for o in opened:
                    os.close(o)
            st = os.fstat(ffd)
            if not stat.S_ISREG(st.st_mode):
                os.close(ffd)
                raise ImageRejected(f"{name} in {self.path} is not a plain file")
            with os.fdopen(ffd, "rb") as f:
                yield f, st.st_size
            return
        m = self._names.get(name)
        if m is None or not m.isfile() or self._tar is None:
            raise ImageRejected(f"{name} is missing from {self.path} or not a plain file")
        f2 = self._tar.extractfile(m)
        assert f2 is not None
        with f2:
            yield f2, m.size


@dataclass(frozen=True)
class _Blob:
    """Where a blob is and what vouches for it (digest and size when a descriptor gave
    them)."""

    name: str
    digest: str | None
    size: int | None
    what: str


def _read_blob_json(src: _Source, blob: _Blob, deadline: Deadline) -> Any:
    limit = src.limits.max_json_bytes
    with src.open(blob.name) as (f, size):
        _check_size(blob, size)
        if size > limit:
            raise ImageRejected(f"{blob.what} ({blob.name}) is {size} bytes, more than the "
                                f"limit of {limit} for a JSON document")
        r = _Hashing(f, blob.what, limit, deadline)
        chunks = []
        while chunk := r.read(_CHUNK):
            chunks.append(chunk)
    _check_digest(blob, r)
    try:
        return json.loads(b"".join(chunks))
    except RecursionError:
        raise ImageRejected(f"{blob.what} is nested too deeply") from None
    except ValueError:
        raise ImageRejected(f"{blob.what} is not valid JSON") from None


def _check_size(blob: _Blob, actual: int) -> None:
    if blob.size is not None and actual != blob.size:
        raise ImageRejected(f"{blob.what} {blob.name} is {actual} bytes but its descriptor "
                            f"says {blob.size}")


def _check_digest(blob: _Blob, r: _Hashing) -> None:
    if blob.size is not None and r.n != blob.size:
        raise ImageRejected(f"{blob.what} {blob.name} is {r.n} bytes but its descriptor "
                            f"says {blob.size}")
    if blob.digest is not None and r.digest() != blob.digest:
        raise ImageRejected(f"{blob.what} {blob.name} does not match its digest "
                            f"{blob.digest}")


def _blob_name(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageRejected(f"unsupported or malformed digest {_one_line(repr(digest), 90)} "
                            "(sha256 only)")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _descriptor(d: object, types: set[str], what: str) -> tuple[_Blob, str]:
    """A checked content descriptor: ``(blob, mediaType)``."""
    if not isinstance(d, dict):
        raise ImageRejected(f"{what}: a descriptor is not an object")
    mt = d.get("mediaType")
    if mt not in types:
        raise ImageRejected(f"{what}: media type {_one_line(repr(mt), 90)} is not one of "
                            f"{', '.join(sorted(types))}")
    size = d.get("size")
    if type(size) is not int or size < 0:
        raise ImageRejected(f"{what}: the descriptor's size {_one_line(repr(size), 40)} is "
                            "not a byte count")
    return _Blob(_blob_name(d.get("digest")), d["digest"], size, what), str(mt)


# -- applying one layer ----------------------------------------------------------------------
def _clean_name(name: str, what: str = "entry", max_depth: int | None = None) -> str:
    if "\0" in name:
        raise ImageRejected(f"layer {what} {_one_line(repr(name), 120)} holds a NUL byte")
    if name.startswith("/"):
        raise ImageRejected(f"layer {what} {_one_line(repr(name), 120)} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageRejected(f"layer {what} {_one_line(repr(name), 120)} climbs out with '..'")
    if max_depth is not None and len(parts) > max_depth:
        raise ImageRejected(f"layer {what} {_one_line(repr(name), 60)}... is {len(parts)} "
                            f"directories deep, more than {max_depth} (ImportLimits.max_depth)")
    return "/".join(parts)


def _parent_dir(root: Path, rel: str) -> Path:
    """Create and return the parent of ``rel``; refuse any component that is not a real
    directory (a symlink would let a later entry write outside the image). Only this
    process writes the staging tree (the store is root's alone), so nothing races it."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ImageRejected(f"layer entry {_one_line(repr(rel), 120)} would be written "
                                f"through the symbolic link {cur.relative_to(root)}")
        if not stat.S_ISDIR(st.st_mode):
            raise ImageRejected(f"layer entry {_one_line(repr(rel), 120)}: "
                                f"{cur.relative_to(root)} is not a directory")
    return cur


def _remove(p: Path) -> None:
    fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        remove_at(fd, p.name)
    finally:
        os.close(fd)


class _Budget:
    """What the layers of one import have cost so far, against its limits."""

    def __init__(self, limits: ImportLimits, deadline: Deadline) -> None:
        self.limits, self.deadline = limits, deadline
        self.bytes = 0
        self.members = 0

    def member(self, m: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ImageRejected(f"the image's layers have more than {self.limits.max_members}"
                                " members (ImportLimits.max_members)")
        cost = 512
        if m.isfile():
            if m.size > self.limits.max_file_bytes:
                raise ImageRejected(f"layer entry {_one_line(repr(m.name), 120)} is "
                                    f"{m.size} bytes, more than the limit of "
                                    f"{self.limits.max_file_bytes} per file "
                                    "(ImportLimits.max_file_bytes)")
            cost += -(-m.size // 4096) * 4096
        self.bytes += cost
        if self.bytes > self.limits.max_unpacked_bytes:
            raise ImageRejected(f"the image unpacks to more than "
                                f"{self.limits.max_unpacked_bytes} bytes "
                                "(ImportLimits.max_unpacked_bytes)")
        if self.members % 256 == 0:
            self.deadline.check()


def apply_layer(root: Path, layer: IO[bytes] | _Hashing,
                limits: ImportLimits = DEFAULT_LIMITS, budget: _Budget | None = None) -> int:
    """Apply one uncompressed layer tar stream to ``root``; return its entry count."""
    budget = budget or _Budget(limits, limits.deadline())
    created: set[str] = set()     # paths this layer made: opaque whiteouts spare them
    opaqued: set[str] = set()     # directories whose lower content this layer already hid
    count = 0
    cls = _tar_class(limits, limits.max_members, "a layer")
    try:
        stream: Any = layer
        tar = cls.open(fileobj=stream, mode="r|")
    except tarfile.TarError as e:
        raise ImageRejected(f"a layer is not a tar archive ({_one_line(e)})") from None
    with tar:
        try:
            while (m := tar.next()) is not None:
                cast(Any, tar).members.clear()   # stream mode keeps every header otherwise
                count += 1
                budget.member(m)
                _apply_member(root, tar, m, created, opaqued, limits)
        except tarfile.TarError as e:
            raise ImageRejected(f"a layer is a broken tar archive ({_one_line(e)})") from None
    return count


def _apply_member(root: Path, tar: tarfile.TarFile, m: tarfile.TarInfo, created: set[str],
                  opaqued: set[str], limits: ImportLimits) -> None:
    rel = _clean_name(m.name, max_depth=limits.max_depth)
    shown = _one_line(repr(m.name), 120)
    if m.ischr() or m.isblk():
        raise ImageRejected(f"layer entry {shown} is a device node; images may not "
                            "carry devices")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
        raise ImageRejected(f"layer entry {shown} has an unsupported type {m.type!r}")
    if not (0 <= m.uid <= _MAX_ID and 0 <= m.gid <= _MAX_ID):
        raise ImageRejected(f"layer entry {shown} has an owner out of range "
                            f"({m.uid}:{m.gid})")
    if not rel:  # the layer's root directory itself
        return
    base = rel.rsplit("/", 1)[-1]
    parent = _parent_dir(root, rel)
    if base == ".wh..wh..opq":
        prefix = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        if prefix in opaqued:
            return   # lower content already hidden; the rest was made by this layer
        opaqued.add(prefix)
        for name in os.listdir(parent):
            if prefix + name not in created:
                _remove(parent / name)
        return
    if base.startswith(".wh."):
        target = base[len(".wh."):]
        if target in ("", ".", ".."):
            raise ImageRejected(f"layer entry {shown} is a malformed whiteout")
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
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
        elif m.issym():
            if "\0" in m.linkname:
                raise ImageRejected(f"symlink {shown} has a NUL byte in its target")
            os.symlink(m.linkname, path)
        elif m.islnk():
            target_rel = _clean_name(m.linkname, "hard link target", limits.max_depth)
            link_to = _parent_dir(root, target_rel) / target_rel.rsplit("/", 1)[-1]
            try:
                tst = os.lstat(link_to)
            except FileNotFoundError:
                raise ImageRejected(f"hard link {shown} points at a missing "
                                    f"{_one_line(repr(m.linkname), 120)}") from None
            if not stat.S_ISREG(tst.st_mode):
                raise ImageRejected(f"hard link {shown} points at "
                                    f"{_one_line(repr(m.linkname), 120)}, which is not a "
                                    "regular file")
            os.link(link_to, path, follow_symlinks=False)
        else:  # fifo
            os.mkfifo(path, 0o600)
    created.add(rel)
    if m.islnk():
        return  # a hard link shares its target's inode, owner and mode
    os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, mode)


def _precheck(src: _Source, blob: _Blob, diff_id: str | None, budget: _Budget) -> None:
    """Read a layer blob once without writing anything, 1 MiB at a time, and check its size
    and digest (or, for a plain tar known only by its diff_id, that): a tampered layer is
    refused before any of it reaches the disk."""
    with src.open(blob.name) as (f, size):
        _check_size(blob, size)
        if size > budget.limits.max_blob_bytes:
            raise ImageRejected(f"{blob.what} {blob.name} is {size} bytes, more than the "
                                f"limit of {budget.limits.max_blob_bytes} (ImportLimits."
                                "max_blob_bytes)")
        if blob.digest is None and diff_id is None:
            return
        r = _Hashing(f, blob.what, size, budget.deadline)
        magic = r.read(2)
        r.drain()
    if blob.digest is not None:
        _check_digest(blob, r)
    elif magic != b"\x1f\x8b" and r.digest() != diff_id:
        raise ImageRejected(f"{blob.what} {blob.name}: its uncompressed content does not "
                            f"match the config's diff_id {diff_id}")


def _apply_blob(src: _Source, blob: _Blob, gz: bool | None, diff_id: str | None,
                root: Path, budget: _Budget) -> None:
    """Stream one layer blob into ``root`` after :func:`_precheck`: its digest and size, its
    gzip-or-tar nature (``gz``; None: whichever it is) and the digest of its uncompressed
    stream are checked again as it is unpacked (the bytes unpacked are the bytes checked,
    even if the source changed meanwhile); nothing of it is kept but the unpacked files."""
    limits = budget.limits
    _precheck(src, blob, diff_id, budget)
    with src.open(blob.name) as (f, size):
        _check_size(blob, size)
        if size > limits.max_blob_bytes:
            raise ImageRejected(f"{blob.what} {blob.name} is {size} bytes, more than the "
                                f"limit of {limits.max_blob_bytes} (ImportLimits."
                                "max_blob_bytes)")
        raw = _Hashing(f, blob.what, size, budget.deadline)
        magic = raw.read(2)
        is_gz = magic == b"\x1f\x8b"
        if gz is not None and gz != is_gz:
            raise ImageRejected(f"{blob.what} {blob.name} is "
                                f"{'gzip' if is_gz else 'not gzip'} but its media type says "
                                f"{'tar+gzip' if gz else 'tar'}")
        raw.prefix = magic
        stream: Any = raw
        if is_gz:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        # A plain tar is its own uncompressed stream: hashed once, for both digests.
        plain = (_Hashing(stream, f"the uncompressed {blob.what}", limits.max_unpacked_bytes,
                          budget.deadline) if is_gz else raw)
        try:
            apply_layer(root, plain, limits, budget)
            plain.drain()
            raw.drain()
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ImageRejected(f"{blob.what} {blob.name} is not a valid "
                                f"{'gzip' if is_gz else 'tar'} stream ({_one_line(e)})"
                                ) from None
        if is_gz:
            stream.close()
    _check_digest(blob, raw)
    if diff_id is not None and plain.digest() != diff_id:
        raise ImageRejected(f"{blob.what} {blob.name}: its uncompressed content does not "
                            f"match the config's diff_id {diff_id}")


# -- whole images ----------------------------------------------------------------------------
def _pick(entries: Any, ref: str | None, where: str) -> dict[str, Any]:
    if not isinstance(entries, list) or not entries:
        raise ImageRejected(f"{where} lists no images")
    if not all(isinstance(e, dict) for e in entries):
        raise ImageRejected(f"{where} is malformed (an entry is not an object)")
    if ref is not None:
        for e in entries:
            ann = e.get("annotations")
            cands: list[Any] = [ann.get(_REF)] if isinstance(ann, dict) else []
            tags = e.get("RepoTags")
            cands += tags if isinstance(tags, list) else []
            names = [n for n in cands if isinstance(n, str) and n]
            if ref in names or any(n.endswith(":" + ref) for n in names):
                return dict(e)
        raise ImageError(f"{where} has no image {ref!r}")
    if len(entries) > 1:
        raise ImageError(f"{where} holds {len(entries)} images; choose one with --ref")
    return dict(entries[0])


def _check_own_type(doc: Any, mt: str, what: str) -> None:
    if not isinstance(doc, dict):
        raise ImageRejected(f"{what} is not a JSON object")
    own = doc.get("mediaType")
    if own is not None and own != mt:
        raise ImageRejected(f"{what} says it is {_one_line(repr(own), 90)} but its "
                            f"descriptor says {mt}")


def _diff_ids(config: Any, n: int, what: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or len(ids) != n:
        raise ImageRejected(f"{what}'s rootfs.diff_ids do not match the layer list")
    for d in ids:
        _blob_name(d)  # validates its form
    return [str(d) for d in ids]


_Plan = list[tuple[_Blob, bool | None, str | None]]


def _oci_layers(src: _Source, ref: str | None, limits: ImportLimits, deadline: Deadline
                ) -> tuple[_Plan, dict[str, Any]]:
    index = _read_blob_json(src, _Blob("index.json", None, None, "index.json"), deadline)
    entry = _pick(index.get("manifests") if isinstance(index, dict) else None, ref,
                  "index.json")
    ann = entry.get("annotations")
    info = {"manifest": entry.get("digest"),
            "ref": ann.get(_REF) if isinstance(ann, dict) else None}
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine,
                                                       os.uname().machine)
    for level in range(5):  # an index may point at a platform index
        blob, mt = _descriptor(entry, _INDEX_TYPES | _MANIFEST_TYPES,
                               "the image index entry" if level == 0 else "a nested index entry")
        if mt in _MANIFEST_TYPES:
            break
        blob = _Blob(blob.name, blob.digest, blob.size, "a nested image index")
        sub = _read_blob_json(src, blob, deadline)
        _check_own_type(sub, mt, "a nested image index")
        subs = sub.get("manifests")
        if not isinstance(subs, list) or not all(isinstance(m, dict) for m in subs):
            raise ImageRejected("a nested image index lists no manifests")
        cands = [m for m in subs if isinstance(m.get("platform"), dict)
                 and m["platform"].get("os") == "linux"
                 and m["platform"].get("architecture") == arch]
        if not cands:
            raise ImageError(f"the image index has no linux/{arch} image")
        entry = dict(cands[0])
    else:
        raise ImageRejected("image indexes nested more than 4 deep")
    blob = _Blob(blob.name, blob.digest, blob.size, "the image manifest")
    manifest = _read_blob_json(src, blob, deadline)
    _check_own_type(manifest, mt, "the image manifest")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageRejected("the image manifest has no layer list")
    if len(layers) > limits.max_layers:
        raise ImageRejected(f"the image has {len(layers)} layers, more than "
                            f"{limits.max_layers} (ImportLimits.max_layers)")
    cblob, _ = _descriptor(manifest.get("config"), _CONFIG_TYPES, "the image config")
    diff_ids = _diff_ids(_read_blob_json(src, cblob, deadline), len(layers),
                         "the image config")
    out: _Plan = []
    for i, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        lblob, lmt = _descriptor(layer, _LAYER_TYPES, f"layer {i + 1}")
        out.append((lblob, lmt in _GZIP_LAYERS, diff_id))
    return out, info


def _config_digest(name: str) -> str | None:
    m = (re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", name)
         or re.fullmatch(r"([0-9a-f]{64})\.json", name))
    return f"sha256:{m.group(1)}" if m else None


def _docker_layers(src: _Source, ref: str | None, limits: ImportLimits, deadline: Deadline
                   ) -> tuple[_Plan, dict[str, Any]]:
    entry = _pick(_read_blob_json(src, _Blob("manifest.json", None, None, "manifest.json"),
                                  deadline), ref, "manifest.json")
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise ImageRejected("manifest.json has no layer list")
    if len(layers) > limits.max_layers:
        raise ImageRejected(f"the image has {len(layers)} layers, more than "
                            f"{limits.max_layers} (ImportLimits.max_layers)")
    # The config's diff_ids (digests of the uncompressed layers) vouch for every layer, in
    # every layout (legacy <id>/layer.tar and blobs/sha256/<digest> alike); a config named
    # by its digest is checked against it.
    config_name = entry.get("Config")
    if not isinstance(config_name, str):
        raise ImageRejected("manifest.json names no image config")
    clean = _clean_name(config_name, "config file")
    config = _read_blob_json(src, _Blob(clean, _config_digest(clean), None, "the image config"),
                             deadline)
    diff_ids = _diff_ids(config, len(layers), "the image config")
    out: _Plan = []
    for i, (name, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        clean = _clean_name(name, "layer file")
        m = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", clean)
        out.append((_Blob(clean, f"sha256:{m.group(1)}" if m else None, None,
                          f"layer {i + 1}"), None, diff_id))
    tags = entry.get("RepoTags")
    tag = tags[0] if isinstance(tags, list) and tags and isinstance(tags[0], str) else None
    return out, {"ref": tag}


def _derive_name(path: str, ref: str | None) -> str:
    base = ref or Path(path.rstrip("/")).name
    base = base.rsplit("/", 1)[-1].split("@")[0]
    base = re.sub(r"\.(tar|tgz|tar\.gz|oci)$", "", base).replace(":", "-").lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._")[:63]
    if not IMAGE_NAME.fullmatch(base):
        raise ImageError(f"cannot derive an image name from {path!r}; pass --name")
    return base


def _fetch(ref: str, dest: Path, deadline: Deadline | None = None) -> None:
    import shutil

    deadline = deadline or DEFAULT_LIMITS.deadline()
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ImageError("docker:// import needs skopeo: 'apt-get install skopeo' "
                         "('make deps' installs it)")
    try:
        p = subprocess.run([skopeo, "copy", "--quiet", ref, f"oci:{dest}:image"],
                           capture_output=True, text=True, check=False,
                           timeout=max(1.0, deadline.remaining()))
    except subprocess.TimeoutExpired:
        raise ImageRejected(f"skopeo copy {ref} took longer than the import's deadline of "
                            f"{deadline.seconds:g} s (ImportLimits.deadline_s)") from None
    if p.returncode != 0:
        raise ImageError(f"skopeo copy {ref} failed: {_one_line(p.stderr, 400)}")


_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
              RecursionError, UnicodeError, EOFError, zlib.error, tarfile.TarError)


def import_image(store: ImageStore, path: str | Path, *, name: str | None = None,
                 ref: str | None = None, limits: ImportLimits = DEFAULT_LIMITS,
                 progress: Progress | None = None) -> Image:
    """Import an OCI layout (dir or tar), a docker-archive tar or ``docker://REF``.

    ``progress(step)`` is called after each step: ``staging``, ``layer`` (each), ``unpack``,
    then the install's ``digest``, ``rename`` and ``manifest``. Any malformed input ends in
    :class:`ImageRejected` or :class:`ImageError` with one line, never another exception."""
    spath = str(path)
    name = validate_name(name or _derive_name(spath, ref), "--name")
    if os.geteuid() != 0:
        raise ImageError("importing images needs root (file owners of the layers are kept)")
    deadline = limits.deadline()
    try:
        return _import(store, spath, name, ref, limits, deadline, progress)
    except _MALFORMED as e:
        raise ImageRejected(f"{spath}: malformed image ({type(e).__name__}: "
                            f"{_one_line(e)})") from None


def _import(store: ImageStore, spath: str, name: str, ref: str | None, limits: ImportLimits,
            deadline: Deadline, progress: Progress | None) -> Image:
    def step(s: str) -> None:
        if progress is not None:
            progress(s)

    store.collect()   # what killed imports and builds left behind
    # Downloads and the unpacked tree stay on the store's filesystem (/tmp may be a small
    # tmpfs), in a staging dir only this process holds: the store lock is not held here.
    with store.staging(name) as staged:
        step("staging")
        if spath.startswith("docker://"):
            _fetch(spath, staged / "layout", deadline)
            src_path, kind = staged / "layout", "registry"
            ref = "image"
        else:
            src_path = Path(spath)
            if not src_path.exists():
                raise ImageError(f"{spath}: no such file or directory")
            kind = ""
        src = _Source(src_path, limits)
        try:
            if src.exists("index.json") and src.exists("oci-layout"):
                layers, info = _oci_layers(src, ref, limits, deadline)
                kind = kind or "oci-layout"
            elif src.exists("manifest.json"):
                layers, info = _docker_layers(src, ref, limits, deadline)
                kind = kind or "docker-archive"
            else:
                raise ImageError(f"{spath} is neither an OCI image layout (oci-layout, "
                                 "index.json) nor a docker archive (manifest.json)")
            rootfs = staged / "rootfs"
            rootfs.mkdir(mode=0o755)
            budget = _Budget(limits, deadline)
            for blob, gz, diff_id in layers:
                _apply_blob(src, blob, gz, diff_id, rootfs, budget)
                step("layer")
        finally:
            src.close()
        step("unpack")
        if kind == "registry":
            _remove(staged / "layout")
        source = {"type": kind,
                  "path": str(src_path.absolute()) if kind != "registry" else None,
                  "layers": len(layers), **{k: v for k, v in info.items() if v}}
        if kind == "registry":
            source["ref"] = spath
        return store.install(name, staged, source, deadline=deadline, progress=progress)
