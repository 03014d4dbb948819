"""A sandbox's footprint on the host: its state dir, bundle, files and cgroups.

:meth:`SandboxDir.allocate` builds everything a runtime needs; :meth:`SandboxDir.teardown` removes
all of it and is safe to call more than once. Bundle content comes from the pure functions in
:mod:`closedpaw.sandbox.bundle` and is validated before it is written.
"""

from __future__ import annotations

import json
import os
import resource
import stat
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from closedpaw.errors import SpecError
from closedpaw.sandbox.bundle import BundleInputs, HostLimits, build_config, check_config
from closedpaw.sandbox.bundle.oci import SANDBOX_GID, SANDBOX_UID, merge_env
from closedpaw.sandbox.bundle.resources import MEMORY_ANNOTATION
from closedpaw.sandbox.bundle.seccomp import allowed_syscalls
from closedpaw.sandbox.bundle.validate import OVERLAY_ANNOTATION, SANDBOX_ID_ANNOTATION
from closedpaw.sandbox.drivers.base import DriverFeatures
from closedpaw.sandbox.host import ownership
from closedpaw.sandbox.host.cgroups import CgroupAccounting
from closedpaw.sandbox.host.files import mount_output, stage_input, unmount_output
from closedpaw.sandbox.images.host import HostRootfs, prepare_host_rootfs
from closedpaw.sandbox.images.overlay import mount_overlay, unmount_overlay
from closedpaw.sandbox.images.store import HOST_IMAGE, ImageStore
from closedpaw.sandbox.result import Isolation
from closedpaw.sandbox.spec import SandboxSpec
from closedpaw.settings import Settings

__all__ = ["ID_PREFIX", "SandboxDir", "host_limits", "new_sandbox_id"]

ID_PREFIX = "cp-"


def new_sandbox_id() -> str:
    return ID_PREFIX + os.urandom(6).hex()


@lru_cache(maxsize=1)
def host_limits() -> HostLimits:
    def hard(which: int) -> int:
        h = resource.getrlimit(which)[1]
        return (1 << 31) if h == resource.RLIM_INFINITY else h
    return HostLimits(nofile_hard=hard(resource.RLIMIT_NOFILE),
                      nproc_hard=hard(resource.RLIMIT_NPROC))


_rootfs_cache: dict[Path, HostRootfs] = {}


def _host_rootfs(data_dir: Path) -> HostRootfs:
    r = _rootfs_cache.get(data_dir)
    if r is None or not r.path.is_dir():
        r = prepare_host_rootfs(data_dir)
        _rootfs_cache[data_dir] = r
    return r


def isolation_stamp(config: Mapping[str, Any], features: DriverFeatures) -> Isolation:
    """What protected a run, read back from the bundle that ran it."""
    lin = config["linux"]
    res = lin["resources"]
    proc = config["process"]
    nproc = next((r["hard"] for r in proc["rlimits"] if r["type"] == "RLIMIT_NPROC"), None)
    seccomp = features.seccomp and bool(lin.get("seccomp"))
    return Isolation(
        runtime=features.name, runtime_version=features.version, platform=features.platform,
        seccomp=seccomp,
        seccomp_syscalls=len(allowed_syscalls(lin["seccomp"])) if seccomp else 0,
        network="none", rootfs=_rootfs_stamp(config),
        user=f"{proc['user']['uid']}:{proc['user']['gid']}",
        capabilities=tuple(proc["capabilities"]["effective"]),
        no_new_privileges=bool(proc["noNewPrivileges"]),
        namespaces=tuple(n["type"] for n in lin["namespaces"]),
        memory_limit_mb=int(config["annotations"][MEMORY_ANNOTATION]) // (1024 * 1024),
        cpu_cores=res["cpu"]["quota"] / res["cpu"]["period"],
        pids_limit=nproc if features.pids_mode == "rlimit" and nproc else res["pids"]["limit"],
        image=config.get("annotations", {}).get("org.closedpaw.image", HOST_IMAGE),
        image_digest=config.get("annotations", {}).get("org.closedpaw.image-digest", ""),
    )


_MAX_LINKS = 40


def _under(path: str, dest: str) -> bool:
    return path == dest or path.startswith(dest.rstrip("/") + "/")


def _on_host(path: str, rootfs: Path, mounts: Sequence[Mapping[str, Any]]) -> Path | None:
    """Where the sandbox path ``path`` lives on the host before the sandbox starts, or
    ``None`` for a mount point of a kernel or tmpfs filesystem (an empty directory then)."""
    best: Mapping[str, Any] | None = None
    for m in mounts:
        if _under(path, m["destination"]) and (
                best is None or len(m["destination"]) > len(best["destination"])):
            best = m
    if best is None:
        return rootfs / path.lstrip("/")
    rest = path[len(best["destination"]):].lstrip("/")
    if best["type"] == "bind":
        return Path(best["source"]) / rest
    if rest:  # inside a fresh tmpfs, /proc or /sys: nothing exists there before start
        return Path("/nonexistent/closedpaw") / rest
    return None


def check_workdir(cwd: str, rootfs: Path, mounts: Sequence[Mapping[str, Any]]) -> bool:
    """Where would a runtime have to create the working directory?

    Runtimes create a missing working directory before the root is made read-only, i.e. on
    the host: runc in the image, runsc (whose gofer runs as root) even through a read-only
    bind such as /usr. Returns True when it exists already, False when it is missing from the
    image itself (allowed only on the sandbox's own overlay, where it lands in the disposable
    layer); raises :class:`SpecError` when it would be created under a mount (a bound host
    directory, a fresh tmpfs) or is not a directory. Links are followed as the sandbox would
    see them; nothing outside the image and its mounts is consulted.
    """
    todo = [p for p in cwd.split("/") if p and p != "."]
    cur = "/"
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            cur = os.path.dirname(cur.rstrip("/")) or "/"
            continue
        nxt = cur.rstrip("/") + "/" + name
        host = _on_host(nxt, rootfs, mounts)
        if host is not None:
            try:
                st = os.lstat(host)
            except OSError:
                if not any(_under(nxt, m["destination"]) for m in mounts):
                    return False
                raise SpecError("workdir", f"{cwd} does not exist in the sandbox and cannot "
                                f"be created under the mount at {_mount_of(nxt, mounts)}; "
                                "use /tmp (the default), /output or a directory of the "
                                "image") from None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise SpecError("workdir", f"{cwd}: too many levels of symbolic links")
                target = os.readlink(host)
                todo = [p for p in target.split("/") if p and p != "."] + todo
                if target.startswith("/"):
                    cur = "/"
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise SpecError("workdir", f"{cwd}: {nxt} is not a directory")
        cur = nxt
    return True


def _mount_of(path: str, mounts: Sequence[Mapping[str, Any]]) -> str:
    dests = [m["destination"] for m in mounts if _under(path, m["destination"])]
    return max(dests, key=len) if dests else "/"


def _dir_in(root: Path, path: str) -> bool:
    """Is ``path`` a real directory inside ``root`` (no component a symlink)?"""
    cur = root
    for part in (p for p in path.split("/") if p):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _rootfs_stamp(config: Mapping[str, Any]) -> str:
    ann = config.get("annotations", {})
    image = ann.get("org.closedpaw.image", HOST_IMAGE)
    mode = "ro" if config["root"]["readonly"] else "rw"
    if ann.get(OVERLAY_ANNOTATION) == "overlay":
        return f"{image}:overlay:{mode}"
    return f"host-bind:{mode}" if image == HOST_IMAGE else f"{image}:{mode}"


class SandboxDir:
    """Host-side state of one sandbox under ``settings.state_dir/sandboxes/<id>``."""

    def __init__(self, settings: Settings, sid: str, spec: SandboxSpec,
                 features: DriverFeatures) -> None:
        self.settings = settings
        self.sid = sid
        self.spec = spec
        self.features = features
        self.dir = settings.state_dir / "sandboxes" / sid
        self.bundle = self.dir
        self.input_dir: Path | None = None
        self.output_mount: Path | None = None
        self.code_dir: Path | None = None
        self.agent_dir: Path | None = None     # the agent's files, bound at /.closedpaw
        self.lower: Path | None = None          # the image root, never written
        self.image_digest = ""
        self.overlay = False
        self.readonly_root = True
        self.cgroups = CgroupAccounting(settings.sandbox.cgroup_parent, sid)
        self.config: dict[str, Any] = {}
        self._torn_down = False
        self._lock_fd: int | None = None

    @classmethod
    def allocate(cls, settings: Settings, sid: str, spec: SandboxSpec,
                 features: DriverFeatures) -> SandboxDir:
        ws = cls(settings, sid, spec, features)
        try:
            ws._allocate()
        except BaseException:
            ws.teardown()
            raise
        return ws

    @property
    def rootfs(self) -> Path:
        """The root the runtime sees: the overlay mount, or the image itself."""
        if self.overlay:
            return self.dir / "rootfs"
        assert self.lower is not None
        return self.lower

    def _resolve_root(self) -> None:
        spec = self.spec
        if spec.image == HOST_IMAGE:
            host = _host_rootfs(self.settings.data_dir)
            self.lower, self.image_digest = host.path, host.digest
            self.readonly_root = True if spec.readonly_root is None else spec.readonly_root
            # The shared skeleton is only ever read-only; a writable root is an overlay on it.
            self.overlay = not self.readonly_root
        else:
            img = ImageStore(self.settings.images).get(spec.image)
            self.lower, self.image_digest = img.rootfs, img.digest
            self.readonly_root = False if spec.readonly_root is None else spec.readonly_root
            # Always an overlay: even a read-only root must not let the runtime create mount
            # points in the shared image.
            self.overlay = True

    def _allocate(self) -> None:
        self._resolve_root()
        self._lock_fd = ownership.claim(self.dir)
        if self.overlay:
            assert self.lower is not None
            mount_overlay(self.lower, self.dir / "layer", self.dir / "rootfs",
                          self.spec.limits.disk_mb)
        if self.spec.code_files:
            self.code_dir = self.dir / "code"
            self.code_dir.mkdir(mode=0o755)
            for name, text in self.spec.code_files.items():
                p = self.code_dir / name
                p.write_text(text)
                os.chmod(p, 0o644)
        if self.spec.input_path is not None:
            self.input_dir = self.dir / "input"
            stage_input(self.spec.input_path, self.input_dir)
        if self.spec.output_dir is not None:
            self.output_mount = self.dir / "output"
            mount_output(self.output_mount, self.spec.limits.output_dir_mb,
                         SANDBOX_UID, SANDBOX_GID)
        if self.features.memory_cgroup:
            self.cgroups.prepare(self.spec.limits.memory_mb * 1024 * 1024)

    def _needs_overlay(self, cwd: str, mounts: Sequence[Mapping[str, Any]]) -> bool:
        """Would the runtime have to create a directory in the image to start (a missing
        working directory or tmpfs mount point)? Runtimes do that before making the root
        read-only, so it would change an image shared by every sandbox."""
        assert self.lower is not None
        if any(not _dir_in(self.lower, m) for m in self.spec.tmpfs):
            return True
        return not check_workdir(cwd, self.lower, mounts)

    def build(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> dict[str, Any]:
        """Build, validate and write ``config.json`` for ``argv`` as the container process."""
        assert self.lower is not None
        config = build_config(self._inputs(argv, env, cwd))
        # Always checked: a working directory under a mount is refused even on an overlay.
        if self._needs_overlay(cwd, config["mounts"]) and not self.overlay:
            # The host skeleton lacks a directory the runtime must create: give this sandbox
            # its own (still read-only) overlay, so the shared skeleton is never touched.
            mount_overlay(self.lower, self.dir / "layer", self.dir / "rootfs",
                          self.spec.limits.disk_mb)
            self.overlay = True
            config = build_config(self._inputs(argv, env, cwd))  # the root is the overlay now
        check_config(config, host_limits())
        tmp = self.dir / "config.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(config))  # dumps: the C encoder; dump(f) is pure Python
        os.replace(tmp, self.dir / "config.json")
        self.config = config
        return config

    def _inputs(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> BundleInputs:
        annotations = {SANDBOX_ID_ANNOTATION: self.sid, "org.closedpaw.image": self.spec.image,
                       "org.closedpaw.image-digest": self.image_digest,
                       OVERLAY_ANNOTATION: "overlay" if self.overlay else "bind"}
        return BundleInputs(
            argv=argv, env=merge_env(self.spec.env, env), cwd=cwd, limits=self.spec.limits,
            rootfs=self.rootfs, cgroups_path=self.cgroups.cgroups_path, host=host_limits(),
            machine=os.uname().machine, pids_mode=self.features.pids_mode,
            gvisor=self.features.platform.startswith("gvisor"),
            input_dir=self.input_dir, output_dir=self.output_mount, code_dir=self.code_dir,
            agent_dir=self.agent_dir,
            usr_source="/usr" if self.spec.image == HOST_IMAGE else None,
            readonly_root=self.readonly_root, tmpfs=self.spec.tmpfs, annotations=annotations,
        )

    def write_process(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                      cwd: str) -> Path:
        """An OCI process.json for ``exec``, with the same user, caps and rlimits."""
        base = dict(self.config["process"])
        base.update(args=list(argv), env=merge_env(self.spec.env, env), cwd=cwd)
        p = self.dir / f"{name}.json"
        with open(p, "w") as f:
            f.write(json.dumps(base))
        return p

    def has_program(self, path: str) -> bool:
        """Does the sandbox's root hold ``path`` (e.g. ``/usr/bin/python3``)? The host image
        sees the host's /usr (bound read-only); store images their own."""
        if self.spec.image == HOST_IMAGE and _under(path, "/usr"):
            return os.path.exists(path)
        assert self.lower is not None
        cur = self.lower / path.lstrip("/")
        for _ in range(_MAX_LINKS):  # resolve links inside the image, never on the host
            if not cur.is_symlink():
                return cur.is_file()
            target = os.readlink(cur)
            cur = Path(os.path.normpath(
                (self.lower / target.lstrip("/")) if target.startswith("/")
                else (cur.parent / target)))
            if not _under(str(cur), str(self.lower)):
                return False
        return False

    def isolation(self) -> Isolation:
        return isolation_stamp(self.config, self.features)

    def _remove_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        ownership.remove(self.dir, fd)

    def teardown(self) -> None:
        """Unmount, remove cgroups and the state dir. Idempotent; raises the first error."""
        if self._torn_down:
            return
        first: BaseException | None = None
        steps = [self.cgroups.remove]
        if self.output_mount is not None:
            out = self.output_mount
            steps.append(lambda: unmount_output(out))
        if self.overlay:
            steps.append(lambda: unmount_overlay(self.dir / "layer", self.dir / "rootfs"))
        steps.append(self._remove_dir)
        for step in steps:
            try:
                step()
            except Exception as e:
                first = first or e
        self._torn_down = first is None
        if first is not None:
            raise first


