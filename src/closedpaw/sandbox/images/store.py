"""The image store: named, read-only root filesystems, each with a small manifest.

Layout under the store root (default ``/var/lib/closedpaw/images``, root's, ``0755``)::

    <name>/manifest.json             name, digest, created, size, source, rootfs (0644)
    <name>/rootfs-<digest>-<nonce>/  the root filesystem (0700), never written once installed
    .base/                           build caches (the debootstrap base of built images; 0700)
    .tmp-*                           images being built or imported (0700, flock'ed by their
                                     owner; removed on failure, or by the next import,
                                     ``image rm`` or ``closedpaw gc`` if the owner was killed)
    .lock                            the store lock, held for installs and removals only

An image is installed atomically: it is built in a ``.tmp-*`` directory, its digest is
computed over the whole tree (paths, types, modes, owners, file contents, link targets), the
tree is renamed into place under a name of its own digest, and only then does the manifest
switch to it. Sandboxes never write to a root filesystem: they see it as the lower layer of a
per-sandbox overlay. A root filesystem that a rebuild or ``rm`` replaced is deleted as soon as
no overlay uses it any more (at once, or at the next install, removal or ``gc``), so running
sandboxes never lose files under them. Every removal is descriptor-relative
(:func:`remove_at`).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from closedpaw.errors import ImageError, ImageNotFound, ImageRejected, SpecError
from closedpaw.sandbox.images.host import HOST_IMAGE
from closedpaw.sandbox.images.limits import Deadline

__all__ = ["HOST_IMAGE", "IMAGE_NAME", "Image", "ImageStore", "Progress", "gc_staging",
           "locked_tempdir", "prepare_rootfs", "remove_at", "remove_tree", "tree_digest",
           "validate_name"]

#: Always used with ``fullmatch`` (``match`` with ``$`` would let a trailing newline pass).
IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
STORE_MODE = 0o755      # the store root: anyone may list images and read manifests ...
IMAGE_DIR_MODE = 0o755  # <store>/<name>
ROOTFS_MODE = 0o700     # ... but no other user may enter a root filesystem (see ImageStore)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: ``progress(step)`` after each install step: digest, rename, manifest.
Progress = Callable[[str], None]
_FORMAT = 2
_ROOTFS_DIR = re.compile(r"rootfs-[0-9a-f]{16}-[0-9a-f]{8}")

# Directories every image root gets so runtimes never need to create mount points in it.
_MOUNT_POINTS = ("proc", "dev", "sys", "run", "input", "output", "code")
_ETC = {
    "etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
    "etc/hostname": "sandbox\n",
    "etc/resolv.conf": "",
}


def validate_name(name: object, field_name: str = "image") -> str:
    """Return ``name`` if it is a valid image name, else raise :class:`SpecError`."""
    if not isinstance(name, str) or not IMAGE_NAME.fullmatch(name):
        raise SpecError(field_name, f"{name!r} is not an image name (lower-case letters, "
                        "digits, '.', '_', '-'; at most 63 characters)")
    return name


@dataclass(frozen=True)
class Image:
    """One installed image. ``rootfs`` is read-only by convention and by overlay."""

    name: str
    digest: str
    created: str
    size: int
    source: dict[str, Any] = field(default_factory=dict)
    rootfs: Path = Path("/")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rootfs"] = str(self.rootfs)
        return d


def _step(progress: Progress | None, step: str) -> None:
    if progress is not None:
        progress(step)


def tree_digest(root: Path, deadline: Deadline | None = None) -> tuple[str, int]:
    """``("sha256:<hex>", total bytes)`` of a whole tree; links are never followed.

    Walks without recursion (any depth), and hashes a file with several hard links once:
    the digest is the same as hashing every link, without reading the data again."""
    h = hashlib.sha256(b"closedpaw-tree-v1\n")
    total = 0
    seen: dict[tuple[int, int], bytes] = {}
    # Depth-first, entries sorted by name, a directory's content right after its own entry.
    stack: list[tuple[str, str, Iterator[os.DirEntry[str]]]] = []

    def push(d: str, rel: str) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        stack.append((d, rel, iter(entries)))

    push(str(root), "")
    while stack:
        _d, rel0, it = stack[-1]
        e = next(it, None)
        if e is None:
            stack.pop()
            continue
        if deadline is not None:
            deadline.check()
        st = e.stat(follow_symlinks=False)
        r = f"{rel0}/{e.name}"
        kind = stat.S_IFMT(st.st_mode)
        h.update(f"{r}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0"
                 .encode("utf-8", "surrogateescape"))
        if stat.S_ISLNK(st.st_mode):
            h.update(os.fsencode(os.readlink(e.path)) + b"\0")
        elif stat.S_ISREG(st.st_mode):
            total += st.st_size
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                h.update(seen[key])
                continue
            fh = hashlib.sha256()
            fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                while chunk := f.read(1 << 20):
                    fh.update(chunk)
            h.update(fh.digest())
            if st.st_nlink > 1:
                seen[key] = fh.digest()
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            h.update(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}\0".encode())
        elif stat.S_ISDIR(st.st_mode):
            push(e.path, r)
    return "sha256:" + h.hexdigest(), total


def prepare_rootfs(rootfs: Path) -> None:
    """Make a root filesystem fit to run sandboxes: mount points, ``/tmp`` 1777, and a
    neutral ``/etc/hosts``, hostname and empty resolv.conf (nothing of the build host). The
    tree's top directory is made ``0700``: no other host user may enter it (its ``/tmp`` and
    any world-writable directory of the image stay out of their reach); sandboxes see its
    content through their overlay (whose root takes the upper layer's mode).

    Every step works relative to directory descriptors and never follows a link: the tree
    may come from an untrusted image whose ``/etc`` or ``/tmp`` is a link to the host's.
    """
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(root_fd, ROOTFS_MODE)
        for d in _MOUNT_POINTS:
            os.close(_real_dir(root_fd, d, 0o755, replace=True))
        tmp_fd = _real_dir(root_fd, "tmp", 0o1777, replace=True)
        try:
            os.fchmod(tmp_fd, 0o1777)  # runc gives a tmpfs the mode of its mount point
        finally:
            os.close(tmp_fd)
        etc_fd = _real_dir(root_fd, "etc", 0o755, replace=False)
        try:
            for rel, text in _ETC.items():
                name = rel.split("/", 1)[1]
                try:
                    st = os.stat(name, dir_fd=etc_fd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if stat.S_ISDIR(st.st_mode):
                        raise ImageRejected(f"/{rel} is a directory in this image")
                    os.unlink(name, dir_fd=etc_fd)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=etc_fd)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    os.fchmod(f.fileno(), 0o644)
        finally:
            os.close(etc_fd)
    finally:
        os.close(root_fd)


def _real_dir(parent_fd: int, name: str, mode: int, *, replace: bool) -> int:
    """Open ``name`` under ``parent_fd`` as a real directory, creating it if missing. Anything
    else there (a link, a file) is replaced when ``replace``, else the image is refused."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.mkdir(name, mode, dir_fd=parent_fd)
    else:
        if not stat.S_ISDIR(st.st_mode):
            if not replace:
                raise ImageRejected(f"/{name} is not a directory in this image (a link or a "
                                    "file); refusing to write through it")
            os.unlink(name, dir_fd=parent_fd)
            os.mkdir(name, mode, dir_fd=parent_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=parent_fd)


class ImageStore:
    """Images on disk under ``root``. Safe to share between processes: a file lock guards the
    install and removal steps, and each build or import stages in a directory of its own,
    locked for the life of its owner (so ``gc`` removes only what dead owners left).

    The store must be owned by the user changing it (root). Anyone may list it and read
    manifests (``0755``), but every root filesystem is ``0700`` and every staging and build
    cache directory too: no other host user can reach inside an image tree, so none can race
    a removal or plant a file in a lower layer through a world-writable directory of an image
    (``/tmp``, ``/var/tmp``, ``/run/lock``). Sandboxes see an image only through their
    overlay, whose lower layer the kernel looks up with the mounter's (root's) credentials,
    so ``0700`` costs them nothing (measured with runc and runsc, see docs/images.md)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._local = threading.local()   # lock depth, per thread

    # -- reading ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "manifest.json").is_file()

    def get(self, name: str) -> Image:
        d = self._dir(name)
        try:
            data = json.loads((d / "manifest.json").read_text())
        except FileNotFoundError:
            known = ", ".join(["host", *(i.name for i in self.list())])
            hint = (f"; build it with 'closedpaw image build {name}'"
                    if name in ("python", "node", "shell", "multi") else "")
            raise ImageNotFound(f"image {name!r} is not in the store {self.root} "
                                f"(available: {known}){hint}") from None
        except PermissionError:
            raise self._private() from None
        except (OSError, ValueError, RecursionError) as e:
            raise ImageError(f"image {name!r}: unreadable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ImageError(f"image {name!r}: manifest of an unknown format; rebuild it")
        if data.get("name") != name:
            raise ImageError(f"image {name!r}: its manifest names {data.get('name')!r}")
        rootfs = data.get("rootfs", "")
        if not isinstance(rootfs, str) or not _ROOTFS_DIR.fullmatch(rootfs):
            raise ImageError(f"image {name!r}: manifest names no valid root; rebuild it")
        digest, created, size = data.get("digest"), data.get("created"), data.get("size")
        source = data.get("source", {})
        if not (isinstance(digest, str) and isinstance(created, str) and type(size) is int
                and isinstance(source, dict)):
            raise ImageError(f"image {name!r}: malformed manifest; rebuild it")
        return Image(name=name, digest=digest, created=created, size=size,
                     source=dict(source), rootfs=d / rootfs)

    def _private(self) -> ImageError:
        return ImageError(f"the image store {self.root} is not readable by this user; "
                          "run this as root")

    def list(self) -> list[Image]:
        if not self.root.is_dir():
            return []
        try:
            names = sorted(self.root.iterdir())
        except PermissionError:
            raise self._private() from None
        out = []
        for d in names:
            if IMAGE_NAME.fullmatch(d.name) and (d / "manifest.json").is_file():
                with contextlib.suppress(ImageError):
                    out.append(self.get(d.name))
        return out

    def verify(self, name: str) -> bool:
        """Recompute the digest of an installed image and compare it with its manifest."""
        img = self.get(name)
        return tree_digest(img.rootfs)[0] == img.digest

    # -- writing ---------------------------------------------------------------------------
    def _open_root(self) -> int:
        """Create the store if needed; make it ``0700``; return a descriptor of it. Refuses
        a store another user owns (whoever owns it could swap anything inside)."""
        try:
            self.root.mkdir(mode=STORE_MODE, parents=True, exist_ok=True)
            fd = os.open(self.root, _DIR_FLAGS)
        except PermissionError:
            raise ImageError(f"the image store {self.root} is not writable by this user; "
                             "changing images needs root") from None
        except OSError as e:
            raise ImageError(f"the image store {self.root}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() and os.geteuid() != 0:
                raise ImageError(f"the image store {self.root} is not writable by this user; "
                                 "changing images needs root")
            if st.st_uid != os.geteuid():
                raise ImageError(f"the image store {self.root} is owned by uid {st.st_uid}, "
                                 "not by this user; refusing to use it (remove it or chown "
                                 "it to root)")
            if stat.S_IMODE(st.st_mode) != STORE_MODE:
                os.fchmod(fd, STORE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the whole store, for the install and removal steps (and the
        build cache). Re-entrant within one thread and :class:`ImageStore` object."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        root_fd = self._open_root()
        try:
            fd = os.open(".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh build directory ``.tmp-NAME-*``, locked (``flock``) by this process until
        it is removed; it is removed unless :meth:`install` consumed it. A killed owner's
        directory is removed by the next import, ``image rm`` or ``closedpaw gc``."""
        validate_name(name)
        if name == HOST_IMAGE:
            raise ImageError("'host' is the built-in host-bind image; choose another name")
        with contextlib.ExitStack() as stack:
            with self.lock():
                tmp = stack.enter_context(locked_tempdir(self.root, f".tmp-{name}-"))
            yield tmp

    def install(self, name: str, staged: Path, source: dict[str, Any], *,
                deadline: Deadline | None = None, progress: Progress | None = None) -> Image:
        """Digest ``staged/rootfs``, then, under the store lock only, move it into place and
        switch the manifest to it atomically, replacing an image of the same name."""
        rootfs = staged / "rootfs"
        prepare_rootfs(rootfs)
        digest, size = tree_digest(rootfs, deadline)
        _step(progress, "digest")
        # Unique per install: a reinstall never reuses (or trusts) an existing directory.
        version = f"rootfs-{digest.split(':', 1)[1][:16]}-{secrets.token_hex(4)}"
        manifest = {"format": _FORMAT, "name": name, "digest": digest,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "size": size, "source": source, "rootfs": version}
        with self.lock():
            root_fd = self._open_root()
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, IMAGE_DIR_MODE, dir_fd=root_fd)
                img_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            finally:
                os.close(root_fd)
            try:
                os.fchmod(img_fd, IMAGE_DIR_MODE)
                staged_fd = os.open(staged, _DIR_FLAGS)
                try:
                    os.rename("rootfs", version, src_dir_fd=staged_fd, dst_dir_fd=img_fd)
                finally:
                    os.close(staged_fd)
                _step(progress, "rename")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(".manifest.json.tmp", dir_fd=img_fd)
                fd = os.open(".manifest.json.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=img_fd)
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(manifest, indent=2) + "\n")
                    os.fchmod(f.fileno(), 0o644)   # whatever the umask: readers list it
                os.replace(".manifest.json.tmp", "manifest.json", src_dir_fd=img_fd,
                           dst_dir_fd=img_fd)
                _step(progress, "manifest")
            finally:
                os.close(img_fd)
            self._sweep(name, keep=version)
            return self.get(name)

    def remove(self, name: str) -> None:
        """Remove an image, or what a killed install left of it. Root filesystems still under
        a running sandbox's overlay stay until it ends (they are swept at the next install,
        removal or ``closedpaw gc``)."""
        if name == HOST_IMAGE:
            raise ImageError("'host' is built in and cannot be removed")
        d = self._dir(name)
        with self.lock():
            existed = d.is_dir()   # an image, or what a killed install left of one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(d / "manifest.json")
            if existed:
                self._sweep(name, keep=None)
            self.collect()
            if not existed:
                self.get(name)  # raises ImageNotFound

    def collect(self) -> builtins.list[str]:
        """Remove leftovers of killed builds and imports (staging dirs whose owner is gone,
        root filesystems no manifest names and no overlay uses); one line per thing."""
        out: builtins.list[str] = []
        with self.lock():
            root_fd = self._open_root()
            try:
                names = sorted(os.listdir(root_fd))
                for n in names:
                    if n.startswith(".tmp-"):
                        _reap_staging(self.root, root_fd, n, out)
                if ".base" in names:
                    try:
                        base_fd = os.open(".base", _DIR_FLAGS, dir_fd=root_fd)
                    except OSError as e:
                        out.append(f"{self.root / '.base'}: not removable ({e.strerror})")
                    else:
                        try:
                            os.fchmod(base_fd, 0o700)   # older versions made it 0755
                            for n in sorted(os.listdir(base_fd)):
                                if n.startswith(".tmp-"):
                                    _reap_staging(self.root / ".base", base_fd, n, out)
                        finally:
                            os.close(base_fd)
            finally:
                os.close(root_fd)
            for n in names:
                if not IMAGE_NAME.fullmatch(n) or not (self.root / n).is_dir():
                    continue
                try:
                    keep = self.get(n).rootfs.name
                except ImageNotFound:
                    keep = None
                except ImageError as e:   # a manifest we cannot read: touch nothing
                    out.append(f"image {n}: left alone ({e})")
                    continue
                self._sweep(n, keep, out)
        return out

    def _sweep(self, name: str, keep: str | None,
               out: builtins.list[str] | None = None) -> None:
        """Delete everything of ``name`` but its manifest and ``keep`` that no overlay uses
        (replaced roots, roots of killed installs, leftovers of older store formats)."""
        d = self._dir(name)
        used = overlay_lower_dirs()
        root_fd = self._open_root()
        try:
            try:
                img_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            except FileNotFoundError:
                return
            try:
                for n in sorted(os.listdir(img_fd)):
                    if n == keep:
                        _private_dir(img_fd, n)   # trees of older versions were 0755
                    if n in ("manifest.json", keep) or lower_in_use(d / n, used):
                        continue
                    try:
                        if mounts_under(d / n):
                            raise ImageError("still mounted there")
                        remove_at(img_fd, n)
                    except (ImageError, OSError) as e:  # mounted inside: next sweep
                        if out is not None:
                            out.append(f"{d / n}: not removed yet ({e})")
                    else:
                        if out is not None:
                            out.append(f"{d / n}: removed (no manifest names it)")
                empty = not os.listdir(img_fd)
            finally:
                os.close(img_fd)
            if keep is None and empty:
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.rmdir(name, dir_fd=root_fd)
        finally:
            os.close(root_fd)


def _private_dir(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != ROOTFS_MODE:
                os.fchmod(fd, ROOTFS_MODE)
        finally:
            os.close(fd)


def gc_staging(store_dir: Path) -> list[str]:
    """``closedpaw gc`` for the image store: remove staging dirs of dead builds and imports
    and root filesystems no manifest names (see :meth:`ImageStore.collect`). Never creates
    the store; one line per thing removed or left."""
    store = ImageStore(store_dir)
    if not store.root.is_dir():
        return []
    try:
        return store.collect()
    except (ImageError, OSError) as e:
        return [f"image store {store.root}: {e}"]


@contextlib.contextmanager
def locked_tempdir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh ``0700`` directory under ``parent``, ``flock``ed by this process for as long
    as it exists, removed (descriptor-relative) on exit. Create it with the store lock held
    so ``gc`` never sees it unlocked."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(tmp, _DIR_FLAGS)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
    finally:
        try:
            remove_tree(tmp)
        finally:
            os.close(fd)


_libc: Any = None


def _umount_detach(path: str) -> None:
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.umount2(path.encode(), 2)  # MNT_DETACH


def _reap_staging(parent: Path, parent_fd: int, name: str, out: list[str]) -> None:
    """Remove staging dir ``name`` if no living process holds its lock."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError:  # not a directory: nothing of ours is a plain file named so
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=parent_fd)
            out.append(f"{parent / name}: removed")
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner lives
        # A killed build may have left /proc and a /dev tmpfs mounted in its chroot.
        for mp in sorted(mounts_under(parent / name), key=len, reverse=True):
            _umount_detach(mp)
        try:
            if mounts_under(parent / name):
                raise ImageError("still mounted there")
            remove_at(parent_fd, name)
        except (ImageError, OSError) as e:
            out.append(f"{parent / name}: staging dir of a dead build not removed ({e})")
        else:
            out.append(f"{parent / name}: removed (staging dir of a dead build or import)")
    finally:
        os.close(fd)

def lower_in_use(root: Path, used: set[str]) -> bool:
    """Is ``root`` the lower layer of a mounted overlay? Sandboxes name it
    ``/proc/self/fd/N/<image>/<root>`` (images/overlay.py), older mounts by its path. Another
    store's root of the same image and root name would count too: it is kept longer, never
    removed early."""
    if str(root) in used:
        return True
    tail = f"{root.parent.name}/{root.name}"
    return any(u.startswith("/proc/self/fd/") and u.split("/", 5)[-1] == tail for u in used)


def overlay_lower_dirs(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """Every lower directory of every overlay mounted on this host."""
    out: set[str] = set()
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        if " - overlay " not in line:
            continue
        for opt in line.rsplit(" ", 1)[-1].split(","):
            if opt.startswith("lowerdir="):
                for p in opt[len("lowerdir="):].split(":"):
                    out.add(p.replace("\\040", " ").replace("\\011", "\t"))
    return out


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below ``path``."""
    base = os.path.abspath(path)
    out: list[str] = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            mp = fields[4].replace("\\040", " ").replace("\\011", "\t")
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return out


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold read-only directories (as image trees do). Refuses when
    anything is mounted inside it: deleting through a mount would delete what it shows.
    See :func:`remove_at` for how it never follows a link or a moved directory."""
    mounted = mounts_under(path)
    if mounted:
        raise ImageError(f"refusing to remove {path}: still mounted there: {mounted}")
    parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_at(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def remove_at(parent_fd: int, name: str) -> None:
    """Remove ``name`` under the directory ``parent_fd`` and everything below it, entirely
    relative to directory descriptors: every directory is opened with ``O_NOFOLLOW`` and
    checked to be the inode just listed, entries are unlinked relative to it, and the walk
    climbs back through ``..`` only after checking it leads to the directory it came from.
    A directory renamed or swapped for a link meanwhile stops the removal with
    :class:`ImageError`; nothing outside the tree is ever touched, and no path is retried.
    Needs one open descriptor whatever the depth, and no recursion."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    dev = st.st_dev
    fd = _open_dir_at(parent_fd, name, st)
    chain: list[tuple[str, int]] = [(name, st.st_ino)]   # names and inodes, top first
    try:
        while True:
            sub = _unlink_files(fd, dev)
            if sub is not None:
                nfd = _open_dir_at(fd, sub[0], sub[1])
                os.close(fd)
                fd = nfd
                chain.append((sub[0], sub[1].st_ino))
                continue
            child, child_ino = chain.pop()
            if not chain:
                os.close(fd)
                fd = -1
                _rmdir_checked(parent_fd, child, child_ino, dev)
                return
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            ust = os.fstat(up)
            if (ust.st_dev, ust.st_ino) != (dev, chain[-1][1]):
                raise ImageError(f"a directory was moved while {name!r} was being removed; "
                                 "stopped (nothing outside it was touched)")
            _rmdir_checked(fd, child, child_ino, dev)
    finally:
        if fd >= 0:
            os.close(fd)


def _open_dir_at(dir_fd: int, name: str, expect: os.stat_result) -> int:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
        os.close(fd)
        raise ImageError(f"{name!r} changed while being removed; stopped")
    if os.geteuid() != 0 and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        os.fchmod(fd, 0o700)  # an owner (not root) needs write access to empty it
    return fd


def _unlink_files(fd: int, dev: int) -> tuple[str, os.stat_result] | None:
    """Unlink every non-directory in ``fd``; return its first subdirectory, or None once
    it is empty."""
    while True:
        removed = False
        with os.scandir(fd) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    if st.st_dev != dev:
                        raise ImageError(f"{e.name!r} is another filesystem mounted inside "
                                         "a tree being removed; stopped")
                    return e.name, st
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(e.name, dir_fd=fd)
                    removed = True
        if not removed:
            return None


def _rmdir_checked(dir_fd: int, name: str, ino: int, dev: int) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if (st.st_dev, st.st_ino) != (dev, ino):
        raise ImageError(f"{name!r} was replaced while being removed; stopped")
    os.rmdir(name, dir_fd=dir_fd)
