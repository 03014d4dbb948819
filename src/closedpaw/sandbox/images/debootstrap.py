"""Built images: a Debian ``debootstrap --variant=minbase`` base plus packages per language.

One base is bootstrapped per suite and architecture and cached under ``<store>/.base``; each
image is a copy of it with its packages installed by ``apt-get`` in a chroot, then stripped of
apt lists and caches. The mirror is the one the host's apt sources name, so builds use the
same package registry as the host. ``progress(step, detail)`` is called as the build goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from closedpaw.errors import ImageError
from closedpaw.sandbox.images.store import Image, ImageStore, locked_tempdir, remove_tree

__all__ = ["BUILD_STEPS", "RECIPES", "Progress", "build_image", "host_mirror", "host_suite"]

RECIPES: dict[str, tuple[str, ...]] = {
    "python": ("python3",),
    "node": ("nodejs",),
    "shell": ("bash", "coreutils"),
    "multi": ("python3", "nodejs", "bash", "coreutils"),
}
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BUILD_STEPS = ("base", "copy", "install", "clean", "digest")
Progress = Callable[[str, str], None]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MS_NOSUID, _MNT_DETACH = 2, 2
# Removed from every built image: apt lists and caches, logs, the build host's traces.
# /dev is emptied too: sandboxes get their own /dev, so the image needs no device nodes.
_CLEAN = ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log", "dev")


def _nop(step: str, detail: str) -> None:
    pass


def host_suite(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's Debian codename (``bookworm``)."""
    try:
        for line in os_release.read_text().splitlines():
            k, _, v = line.partition("=")
            if k == "VERSION_CODENAME" and v.strip('"'):
                return v.strip('"')
    except OSError:
        pass
    return "bookworm"


def host_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt sources name for ``suite`` (main archive, not
    security or updates), in either the one-line or the deb822 format."""
    files = [apt_dir / "sources.list"]
    d = apt_dir / "sources.list.d"
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    k, sep, v = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[k.strip().lower()] = v.strip()
                if ("deb" in fields.get("types", "").split()
                        and suite in fields.get("suites", "").split()):
                    uris = fields.get("uris", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if parts[:1] != ["deb"]:
                    continue
                parts = parts[1:]
                if len(parts) >= 2 and parts[1] == suite:
                    return parts[0].rstrip("/")
    return FALLBACK_MIRROR


def _arch() -> str:
    out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() or "amd64"


def _run(argv: Sequence[str], step: str, progress: Progress, what: str) -> None:
    """Run a build command, passing its lines to ``progress``; raise with its tail on error."""
    env = {"PATH": _PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root"}
    tail: list[str] = []
    with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, env=env, text=True, errors="replace") as p:
        assert p.stdout is not None
        for line in p.stdout:
            line = line.rstrip()
            if line:
                tail = [*tail[-19:], line]
                progress(step, line[:160])
        rc = p.wait()
    if rc != 0:
        raise ImageError(f"{what} failed (exit {rc}): " + " | ".join(tail[-5:]))


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise ImageError("building images needs root (debootstrap and chroot)")
    for tool in ("debootstrap", "chroot", "dpkg"):
        if shutil.which(tool, path=_PATH) is None:
            raise ImageError(f"{tool} is not installed: 'apt-get install debootstrap' "
                             "('make deps' installs it)")


def _base(store: ImageStore, suite: str, mirror: str, arch: str, progress: Progress,
          rebuild: bool) -> Path:
    """The cached base (call with the store lock held). ``.base`` is ``0700`` like the store;
    a base being bootstrapped lives in a locked ``.tmp-base-*`` dir that ``gc`` removes if
    its owner dies."""
    base = store.root / ".base" / f"{suite}-minbase-{arch}"
    if (base / ".complete").is_file() and not rebuild:
        progress("base", f"using the cached {suite} base")
        return base
    base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(base.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    with locked_tempdir(base.parent, ".tmp-base-") as tmp:
        root = tmp / "root"
        _run(["debootstrap", "--variant=minbase", f"--arch={arch}", suite, str(root), mirror],
             "base", progress, f"debootstrap {suite} from {mirror}")
        for rel in _CLEAN:
            _empty_dir(root / rel)
        (root / ".complete").write_text(f"{suite} {mirror}\n")
        if base.exists():
            remove_tree(base)
        os.rename(root, base)
    return base


def _empty_dir(d: Path) -> None:
    if d.is_dir() and not d.is_symlink():
        for e in d.iterdir():
            if e.is_dir() and not e.is_symlink():
                remove_tree(e)
            else:
                e.unlink()


# The device nodes package scripts need, made on a private tmpfs: the host's /dev is never
# bound into the build chroot.
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
            ("urandom", 1, 9), ("tty", 5, 0))


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """/proc and a private /dev for package scripts in the chroot; always unmounted, and the
    build fails rather than go on with anything still mounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    done: list[Path] = []

    def mount(src: bytes, dst: Path, fstype: bytes, data: bytes | None) -> None:
        dst.mkdir(exist_ok=True)
        if libc.mount(src, str(dst).encode(), fstype, _MS_NOSUID, data) != 0:
            err = ctypes.get_errno()
            raise ImageError(f"could not mount {fstype.decode()} in the build chroot: "
                             f"{os.strerror(err)}")
        done.append(dst)

    try:
        mount(b"proc", root / "proc", b"proc", None)
        dev = root / "dev"
        mount(b"tmpfs", dev, b"tmpfs", b"mode=0755,size=1m")
        for name, major, minor in _DEVICES:
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, dev / name)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir(mode=0o1777)
        yield
    finally:
        for dst in reversed(done):
            libc.umount2(str(dst).encode(), _MNT_DETACH)
        left = [str(d) for d in done if os.path.ismount(d)]
        if left:
            raise ImageError(f"could not unmount {left} after the build")


def build_image(store: ImageStore, name: str, *, packages: Sequence[str] | None = None,
                mirror: str | None = None, suite: str | None = None, rebuild_base: bool = False,
                progress: Progress = _nop) -> Image:
    """Build (or rebuild) image ``name`` from the cached base plus its packages."""
    if packages is None:
        if name not in RECIPES:
            raise ImageError(f"no recipe for image {name!r}; built images: "
                             f"{', '.join(RECIPES)} (import others with 'closedpaw image "
                             "import')")
        packages = RECIPES[name]
    for pkg in packages:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", pkg):
            raise ImageError(f"{pkg!r} is not a Debian package name")
    _require_tools()
    suite = suite or host_suite()
    mirror = mirror or host_mirror(suite)
    arch = _arch()
    # The store lock covers the shared base and its copy only, not the package install.
    with contextlib.ExitStack() as stack:
        with store.lock():
            store.collect()   # what killed builds and imports left behind
            base = _base(store, suite, mirror, arch, progress, rebuild_base)
            staged = stack.enter_context(store.staging(name))
            rootfs = staged / "rootfs"
            progress("copy", f"copying the {suite} base")
            cp = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)],
                                capture_output=True, text=True, check=False)
            if cp.returncode != 0:
                raise ImageError(f"copying the base failed: {cp.stderr.strip()}")
        (rootfs / ".complete").unlink()
        # The chroot resolves the mirror with the host's resolver during the build only.
        resolv = rootfs / "etc/resolv.conf"
        with contextlib.suppress(FileNotFoundError):
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy_rc = rootfs / "usr/sbin/policy-rc.d"
        policy_rc.write_text("#!/bin/sh\nexit 101\n")  # never start services
        os.chmod(policy_rc, 0o755)
        try:
            with _chroot_mounts(rootfs):
                _run(["chroot", str(rootfs), "apt-get", "update", "-q"], "install",
                     progress, "apt-get update in the build chroot")
                _run(["chroot", str(rootfs), "apt-get", "install", "-y", "-q",
                      "--no-install-recommends", *packages], "install", progress,
                     f"apt-get install {' '.join(packages)}")
                _run(["chroot", str(rootfs), "apt-get", "clean"], "clean", progress,
                     "apt-get clean")
        finally:
            policy_rc.unlink()
        progress("clean", "removing apt lists, caches and logs")
        for rel in _CLEAN:
            _empty_dir(rootfs / rel)
        progress("digest", "computing the image digest")
        return store.install(name, staged, {
            "type": "debootstrap", "suite": suite, "mirror": mirror, "arch": arch,
            "variant": "minbase", "packages": list(packages)})
