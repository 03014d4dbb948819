"""The ``host`` image: a tiny read-only skeleton root that borrows the host's ``/usr``.

The skeleton holds the top-level symlinks of a merged-/usr system (``/bin``, ``/lib``, ...),
mount points, and only the few ``/etc`` files programs need: passwd and group with the
sandbox user, hosts, nsswitch.conf, the loader cache and the alternatives links. The host's
``/etc`` is never exposed. Built once per content hash under ``data_dir/rootfs`` and shared
read-only by every sandbox (runtimes create no mount points in it: they all exist).
"""

from __future__ import annotations

import os
from pathlib import Path

from closedpaw._record import Record
from closedpaw.errors import RuntimeUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:  # the interpreter's built-in SHA-256 (the very digest hashlib gives), without
        # loading OpenSSL: ~3 ms that every one-shot `closedpaw run` would pay for one hash
        from _sha256 import sha256
    except ImportError:  # an interpreter built without it
        from hashlib import sha256

__all__ = ["HOST_IMAGE", "MOUNT_POINTS", "HostRootfs", "locate_host_rootfs", "prepare_host_rootfs"]

#: the name of the host skeleton among images (defined here, where the one-shot path can
#: reach it without loading the image store)
HOST_IMAGE = "host"
_VERSION = "5"
MOUNT_POINTS = ("usr", "proc", "dev", "sys", "tmp", "input", "output", "code", "run", "etc",
                ".closedpaw")
_TOP_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")

_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                  "nobody:x:65534:65534:sandbox:/tmp:/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "etc/hostname": "sandbox\n",
    "etc/resolv.conf": "",
}


class HostRootfs(Record):
    path: Path
    digest: str


def _host_links(host_root: Path) -> dict[str, str]:
    links: dict[str, str] = {}
    for name in _TOP_LINKS:
        p = host_root / name
        if p.is_symlink():
            target = os.readlink(p)
            if target.lstrip("/").split("/")[0] != "usr":
                raise RuntimeUnavailable(f"/{name} points at {target}, outside /usr; the host "
                                         "image needs a merged-/usr system (Debian 12 is one)")
            links[name] = target.lstrip("/")
        elif p.exists():
            raise RuntimeUnavailable(f"/{name} is a directory, not a link into /usr; the host "
                                     "image needs a merged-/usr system (Debian 12 is one)")
    return links


def _alternatives(host_root: Path) -> dict[str, str]:
    d = host_root / "etc/alternatives"
    out: dict[str, str] = {}
    if d.is_dir():
        for e in os.scandir(d):
            if e.is_symlink():
                t = os.readlink(e.path)
                if t.startswith("/usr/"):
                    out[e.name] = t
    return out


def _digest(links: dict[str, str], alts: dict[str, str], ldcache: bytes) -> str:
    h = sha256(_VERSION.encode())
    for k in sorted(links):
        h.update(f"L{k}={links[k]}\n".encode())
    for k in sorted(alts):
        h.update(f"A{k}={alts[k]}\n".encode())
    for k in sorted(_FILES):
        h.update(f"F{k}={_FILES[k]}\n".encode())
    h.update(ldcache)
    return h.hexdigest()[:16]


#: data_dir/<this>: the last digest computed, keyed by the identity of what it hashed
DIGEST_CACHE = "host-rootfs.json"


#: a file changed less than this long before it was looked at may change again within the
#: same timestamp tick (file times are coarse: a jiffy): its digest is not remembered
_SETTLE_NS = 200_000_000


def _inputs_key(host_root: Path, links: dict[str, str]) -> tuple[list[object], bool]:
    """What the digest depends on, cheaply: the links, and the identity of the alternatives
    directory (adding, removing or replacing a link in it changes its mtime; a link's target
    cannot change in place) and of the loader cache (ldconfig replaces it by a rename).
    Taken BEFORE the contents are read, so a change while they are read shows next time;
    and whether both are settled (a later change cannot leave their times as they are)."""
    key: list[object] = [_VERSION, str(host_root), [[k, v] for k, v in sorted(links.items())]]
    import time

    settled_before = time.time_ns() - _SETTLE_NS
    settled = True
    for rel in ("etc/alternatives", "etc/ld.so.cache"):
        try:
            st = os.stat(host_root / rel)
        except OSError:
            key.append(None)
        else:
            key.append([st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
            settled = settled and max(st.st_mtime_ns, st.st_ctime_ns) < settled_before
    return key, settled


def _cached_digest(data_dir: Path, key: list[object]) -> str | None:
    import json

    try:
        with open(data_dir / DIGEST_CACHE, "rb") as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    digest = entry.get("digest")
    ok = isinstance(digest, str) and len(digest) == 16 and \
        all(c in "0123456789abcdef" for c in digest)
    return digest if ok else None


def _save_digest(data_dir: Path, key: list[object], digest: str) -> None:
    import contextlib
    import json

    tmp = data_dir / f".{DIGEST_CACHE}.{os.getpid()}"
    with contextlib.suppress(OSError):
        try:
            tmp.write_text(json.dumps({"key": key, "digest": digest}))
            os.replace(tmp, data_dir / DIGEST_CACHE)
        finally:
            tmp.unlink(missing_ok=True)


def locate_host_rootfs(data_dir: Path, host_root: Path = Path("/")) -> HostRootfs:
    """Where the skeleton for the current host is (or would be), reading only: for commands
    that report it (``closedpaw image list``), which any user may run."""
    links = _host_links(host_root)
    digest = _cached_digest(data_dir, _inputs_key(host_root, links)[0])
    if digest is not None:
        return HostRootfs(data_dir / "rootfs" / f"host-{digest}", digest)
    return _locate(data_dir, host_root, links)[0]


def _locate(data_dir: Path, host_root: Path, links: dict[str, str]
            ) -> tuple[HostRootfs, dict[str, str], bytes]:
    alts = _alternatives(host_root)
    try:
        ldcache = (host_root / "etc/ld.so.cache").read_bytes()
    except FileNotFoundError:
        ldcache = b""
    digest = _digest(links, alts, ldcache)
    return HostRootfs(data_dir / "rootfs" / f"host-{digest}", digest), alts, ldcache


def prepare_host_rootfs(data_dir: Path, host_root: Path = Path("/")) -> HostRootfs:
    """Return the skeleton for the current host, building it atomically if needed.

    Hashing the host's alternatives and loader cache takes ~2 ms (hundreds of links), paid
    by every one-shot ``closedpaw run``: the digest is kept in ``data_dir/host-rootfs.json``
    keyed by those files' identities (:func:`_inputs_key`), and recomputed when they change
    (or changed too recently to tell) or the skeleton is missing."""
    links = _host_links(host_root)
    key, settled = _inputs_key(host_root, links)
    digest = _cached_digest(data_dir, key)
    if digest is not None:
        known = HostRootfs(data_dir / "rootfs" / f"host-{digest}", digest)
        if known.path.is_dir():
            return known
    where, alts, ldcache = _locate(data_dir, host_root, links)
    final, digest = where.path, where.digest
    base = final.parent
    if final.is_dir():
        if settled:
            _save_digest(data_dir, key, digest)
        return where
    import shutil
    import tempfile

    base.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o755)
    os.chmod(base, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
    try:
        os.chmod(tmp, 0o755)
        for d in MOUNT_POINTS:
            (tmp / d).mkdir(mode=0o755)
        os.chmod(tmp / "tmp", 0o1777)  # runc gives a tmpfs the mode of its mount point
        for name, target in links.items():
            os.symlink(target, tmp / name)
        (tmp / "var").mkdir(mode=0o755)
        os.symlink("/tmp", tmp / "var/tmp")
        (tmp / "etc/alternatives").mkdir(mode=0o755)
        for name, target in alts.items():
            os.symlink(target, tmp / "etc/alternatives" / name)
        for rel, text in _FILES.items():
            (tmp / rel).write_text(text)
            os.chmod(tmp / rel, 0o644)
        if ldcache:
            (tmp / "etc/ld.so.cache").write_bytes(ldcache)
            os.chmod(tmp / "etc/ld.so.cache", 0o644)
        os.symlink("/usr/share/zoneinfo/Etc/UTC", tmp / "etc/localtime")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a concurrent builder won the race: use theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if settled:
        _save_digest(data_dir, key, digest)
    return HostRootfs(final, digest)
