"""A sandbox's footprint on the host: its state dir, bundle, files and cgroups.

:meth:`SandboxDir.allocate` builds everything a runtime needs; :meth:`SandboxDir.teardown` removes
all of it and is safe to call more than once. Bundle content comes from the pure functions in
:mod:`closedpaw.sandbox.bundle` and is validated before it is written.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import stat
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from closedpaw.errors import (
    ClosedPawError,
    FileTransferError,
    HostPidBudgetExceeded,
    RuntimeFailure,
    SpecError,
    StateStorageError,
)
from closedpaw.sandbox.bundle import BundleInputs, HostLimits, build_config, check_config
from closedpaw.sandbox.bundle.oci import (
    INIT_ANNOTATION,
    SANDBOX_GID,
    SANDBOX_UID,
    USERNS_FILE,
    IdMap,
    merge_env,
)
from closedpaw.sandbox.bundle.resources import MEMORY_ANNOTATION, host_pids
from closedpaw.sandbox.bundle.seccomp import allowed_syscalls
from closedpaw.sandbox.bundle.validate import OVERLAY_ANNOTATION, SANDBOX_ID_ANNOTATION
from closedpaw.sandbox.drivers.features import DriverFeatures
from closedpaw.sandbox.host import ownership, userns
from closedpaw.sandbox.host.cgroups import (
    HOST_PID_CEILING,
    PID_SHARE,
    CgroupAccounting,
    pid_budget,
)
from closedpaw.sandbox.images.host import HOST_IMAGE, HostRootfs, prepare_host_rootfs
from closedpaw.sandbox.result import Isolation
from closedpaw.sandbox.spec import SandboxSpec
from closedpaw.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ID_PREFIX", "SandboxDir", "host_limits", "new_sandbox_id", "storage_error"]

# errnos that mean "the filesystem under the state dir failed", not "the input was bad"
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def _full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail == 0 or st.f_favail == 0


def storage_error(exc: BaseException, state_dir: Path) -> BaseException:
    """``exc`` as a :class:`StateStorageError` naming the path when it is a fault of the
    state filesystem (no space, quota, read-only, I/O error; or a runtime failure with no
    output on a full state filesystem, which is how runc reports that); else ``exc``."""
    if isinstance(exc, OSError) and not isinstance(exc, ClosedPawError) \
            and exc.errno in _STORAGE_ERRNOS:
        where = exc.filename or state_dir
        return StateStorageError(
            f"the state filesystem failed at {where}: {exc.strerror}; free space there or "
            "point CLOSEDPAW_STATE_DIR elsewhere")
    if isinstance(exc, RuntimeFailure) and _full(state_dir):
        return StateStorageError(
            f"the state filesystem at {state_dir} is full ({exc}); free space there or "
            "point CLOSEDPAW_STATE_DIR elsewhere")
    return exc

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
    ann = config.get("annotations", {})
    agent = ann.get(INIT_ANNOTATION) == "agent"
    maps = lin.get("uidMappings") or []
    host_uids = (f"{maps[0]['hostID']}-{maps[0]['hostID'] + maps[0]['size'] - 1}"
                 if maps else "")
    return Isolation(
        runtime=features.name, runtime_version=features.version, platform=features.platform,
        seccomp=seccomp,
        seccomp_syscalls=len(allowed_syscalls(lin["seccomp"])) if seccomp else 0,
        network="none", rootfs=_rootfs_stamp(config),
        # What commands run as: the agent init starts as 0 and gives up uid 0 and its two
        # capabilities before it reads a request; its commands run as 65534 with none.
        user=(f"{SANDBOX_UID}:{SANDBOX_GID}" if agent
              else f"{proc['user']['uid']}:{proc['user']['gid']}"),
        capabilities=() if agent else tuple(proc["capabilities"]["effective"]),
        no_new_privileges=bool(proc["noNewPrivileges"]),
        namespaces=tuple(n["type"] for n in lin["namespaces"]),
        memory_limit_mb=int(config["annotations"][MEMORY_ANNOTATION]) // (1024 * 1024),
        cpu_cores=res["cpu"]["quota"] / res["cpu"]["period"],
        pids_limit=nproc if features.pids_mode == "rlimit" and nproc else res["pids"]["limit"],
        image=config.get("annotations", {}).get("org.closedpaw.image", HOST_IMAGE),
        image_digest=config.get("annotations", {}).get("org.closedpaw.image-digest", ""),
        user_namespace=any(n["type"] == "user" for n in lin["namespaces"]),
        host_uids=host_uids,
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


def _keep_locked_flags(mounts: Sequence[dict[str, Any]]) -> None:
    """In a user namespace the flags of a bind's source mount are locked: runc's remount of
    the bind without them (e.g. without ``noexec`` for the /output tmpfs) would be refused
    (EPERM). Add each source's ``noexec``/``ro`` to the bind's options (never removing one)."""
    for m in mounts:
        if m["type"] != "bind":
            continue
        try:
            flags = os.statvfs(m["source"]).f_flag
        except OSError:
            continue
        opts = m["options"]
        if flags & os.ST_NOEXEC and "noexec" not in opts:
            opts.append("noexec")
        if flags & os.ST_RDONLY and "ro" not in opts:
            if "rw" in opts:
                opts.remove("rw")
            opts.append("ro")


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
        self.run_dir: Path | None = None
        self.files_mount: Path | None = None  # the tmpfs holding code_dir and input_dir
        self.agent_dir: Path | None = None     # the agent's files, bound at /.closedpaw
        self.agent_mount: Path | None = None   # the tmpfs they are staged on (see build)
        self.lower: Path | None = None          # the image root, never written
        self.image_digest = ""
        self.overlay = False
        self.root_view = False                  # the host skeleton through a read-only overlay
        self.readonly_root = True
        self.cgroups = CgroupAccounting(settings.sandbox.cgroup_parent, sid)
        self.config: dict[str, Any] = {}
        self._torn_down = False
        self._lock_fd: int | None = None
        self.ids: userns.IdRange | None = None  # this sandbox's own host uid/gid range
        self._via: dict[str, Path] = {}         # sources bound into the state dir (userns)

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
        """The root the runtime sees: the overlay mount (or read-only view), or the image
        itself."""
        if self.overlay or self.root_view:
            return self.dir / "rootfs"
        assert self.lower is not None
        return self._reachable(self.lower, "root")

    def _reachable(self, path: Path, name: str) -> Path:
        """``path``, or (in a user namespace, when the namespace's root could not reach it:
        a data dir or package under a 0700 directory) a bind of it in the state dir."""
        if self.ids is None:
            return path
        if name not in self._via:
            if userns.reachable(path):
                return path
            userns.bind(path, self.dir / f"via-{name}")
            self._via[name] = self.dir / f"via-{name}"
        return self._via[name]

    def _resolve_root(self) -> None:
        spec = self.spec
        if spec.image == HOST_IMAGE:
            host = _host_rootfs(self.settings.data_dir)
            self.lower, self.image_digest = host.path, host.digest
            self.readonly_root = True if spec.readonly_root is None else spec.readonly_root
            # The shared skeleton is only ever read-only; a writable root is an overlay on it.
            self.overlay = not self.readonly_root
        else:
            from closedpaw.sandbox.images.store import ImageStore  # not on the host-image path

            img = ImageStore(self.settings.images).get(spec.image)
            self.lower, self.image_digest = img.rootfs, img.digest
            self.readonly_root = False if spec.readonly_root is None else spec.readonly_root
            # Always an overlay: even a read-only root must not let the runtime create mount
            # points in the shared image.
            self.overlay = True

    def _allocate(self) -> None:
        self._resolve_root()
        self._lock_fd = ownership.claim(self.dir)
        if self.features.name == "runc" and self.settings.sandbox.userns:
            if not userns.reachable(self.settings.state_dir):
                # The namespace's root (runc's init) must reach the state dir (bundle, root,
                # mounts); a state dir under a directory others cannot search (pytest's 0700
                # tmp, a home directory) cannot host one. Said on the stamp and by doctor.
                import logging

                logging.getLogger(__name__).warning(
                    "sandbox %s runs without a user namespace of its own: others cannot "
                    "search the way to the state dir %s", self.sid, self.settings.state_dir)
            else:
                self.ids = userns.claim(self.settings, self.dir)
                userns.make_namespace(self.ids, self.dir / USERNS_FILE)
        if self.features.memory_cgroup:   # a real runtime with cgroups (not the fake)
            self._reserve_pids()
        if self.overlay:
            assert self.lower is not None
            from closedpaw.sandbox.images.overlay import mount_overlay  # ctypes: only here

            mount_overlay(self.lower, self.dir / "layer", self.dir / "rootfs",
                          self.spec.limits.disk_mb, name_lower=self.spec.image != HOST_IMAGE)
        elif self.spec.image == HOST_IMAGE and self.features.platform == "native":
            # runc shows the host's own mount table: a bind of the skeleton would name its
            # path under the data dir as the sandbox's root (gVisor's table shows neither)
            from closedpaw.sandbox.host.files import mount_root_view

            assert self.lower is not None
            mount_root_view(self.lower, self.dir / "empty", self.dir / "rootfs")
            self.root_view = True
        if self.spec.code_files or self.spec.input_path is not None:
            self._stage_files()
        if self.spec.code_files:
            assert self.files_mount is not None
            self.code_dir = self.files_mount / "code"
            self.code_dir.mkdir(mode=0o755)
            for name, text in self.spec.code_files.items():
                p = self.code_dir / name
                p.write_text(text)
                os.chmod(p, 0o644)
        if self.spec.secret_files:
            # run/secrets/NAME: 0400 and 0500, the sandbox user's only; bound read-only on /run
            self.run_dir = self.dir / "run"
            self.run_dir.mkdir(mode=0o755)
            sdir = self.run_dir / "secrets"
            sdir.mkdir(mode=0o500)
            for name, value in self.spec.secret_files.items():
                fd = os.open(sdir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o400)
                try:
                    os.write(fd, value.encode("utf-8"))
                    os.fchown(fd, self.host_id(SANDBOX_UID), self.host_id(SANDBOX_GID))
                finally:
                    os.close(fd)
            os.chown(sdir, self.host_id(SANDBOX_UID), self.host_id(SANDBOX_GID))
        if self.spec.input_path is not None:
            from closedpaw.sandbox.host.files import stage_input

            assert self.files_mount is not None
            self.input_dir = self.files_mount / "input"
            stage_input(self.spec.input_path, self.input_dir)
        if self.spec.output_dir is not None:
            from closedpaw.sandbox.host.files import mount_output

            self.output_mount = self.dir / "output"
            mount_output(self.output_mount, self.spec.limits.output_dir_mb,
                         self.host_id(SANDBOX_UID), self.host_id(SANDBOX_GID))
        if self.features.memory_cgroup:
            self.cgroups.prepare(self.spec.limits.memory_mb * 1024 * 1024)

    def host_id(self, inside: int) -> int:
        """The host uid (or gid) of the sandbox's id ``inside``."""
        return inside if self.ids is None else self.ids.host_id(inside)

    def _reserve_pids(self) -> None:
        """Reserve this sandbox's host pids limit on our cgroup when the sandboxes of this
        cgroup parent stay within their share of ``kernel.pid_max``. When they would not,
        wait (up to ``settings.sandbox.pid_wait_s``) for running sandboxes to end, then
        refuse; a sandbox that could never fit is refused at once. Each check and
        reservation happens under one lock, shared by every ClosedPaw process using this
        state dir."""
        import fcntl
        import time

        need = host_pids(self.spec.limits, self.features.pids_mode)
        parent = self.settings.sandbox.cgroup_parent
        wait_s = self.settings.sandbox.pid_wait_s
        give_up = time.monotonic() + wait_s
        fd = os.open(self.settings.state_dir / "pids-budget.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                fcntl.flock(fd, fcntl.LOCK_EX)
                b = pid_budget(parent)
                if need <= b.left:
                    self.cgroups.reserve_pids(need)
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)
                never = need > min(b.limit, int(b.pid_max * HOST_PID_CEILING))
                if never or time.monotonic() >= give_up:
                    break
                time.sleep(0.05)
        finally:
            os.close(fd)
        what = (f"{self.spec.limits.max_processes} processes under runsc need {need} host "
                f"pids" if self.features.pids_mode == "rlimit"
                else f"{need} processes need {need} host pids")
        waited = "" if never else f" after waiting {wait_s:g} s"
        raise HostPidBudgetExceeded(
            f"not starting the sandbox{waited}: {what}; {b.left} are left (the "
            f"{b.sandboxes} live sandbox(es) hold {b.committed} of the {b.limit} sandboxes "
            f"may hold, {PID_SHARE:.0%} of kernel.pid_max {b.pid_max}; {b.host_tasks} tasks "
            "exist on the host). Lower max_processes (--pids), wait for sandboxes to end, or "
            "raise kernel.pid_max (sysctl -w kernel.pid_max=4194304)")

    def _stage_files(self) -> None:
        """Mount the tmpfs ``code/`` and ``input/`` are staged on, sized to them."""
        from closedpaw.sandbox.host.files import mount_staging, staged_size

        size, entries = sum(len(t.encode()) for t in self.spec.code_files.values()), 2
        if self.spec.input_path is not None:
            src = self.spec.input_path
            try:
                more, n = staged_size(src)
            except FileNotFoundError:
                raise FileTransferError(f"input {src} does not exist") from None
            except OSError as e:
                raise FileTransferError(f"input {src} is not readable: {e.strerror}") from None
            size, entries = size + more, entries + n
        self.files_mount = self.dir / "files"
        mount_staging(self.files_mount, size + len(self.spec.code_files) * 4096,
                      entries + len(self.spec.code_files))

    def _stage_agent(self) -> Path:
        """The agent's files, copied onto a small tmpfs of this sandbox that is bound
        read-only at ``/.closedpaw``. Bound from where the package is installed, the sandbox's
        ``/proc/self/mountinfo`` showed that host path (runc); from this tmpfs it shows
        ``/``. The namespace's root can always reach it (no bind of the package needed)."""
        if self.agent_mount is None:
            from closedpaw.sandbox.host.files import mount_staging

            assert self.agent_dir is not None
            files = [e for e in os.scandir(self.agent_dir)
                     if e.is_file(follow_symlinks=False) and not e.name.startswith(".")]
            mnt = self.dir / "agent"
            mount_staging(mnt, sum(e.stat().st_size for e in files), len(files))
            self.agent_mount = mnt
            for e in files:
                with open(e.path, "rb") as src, open(mnt / e.name, "xb") as dst:
                    dst.write(src.read())
                os.chmod(mnt / e.name, 0o644)
        return self.agent_mount

    def _needs_overlay(self, cwd: str, mounts: Sequence[Mapping[str, Any]]) -> bool:
        """Would the runtime have to create a directory in the image to start (a missing
        working directory or tmpfs mount point)? Runtimes do that before making the root
        read-only, so it would change an image shared by every sandbox."""
        assert self.lower is not None
        if any(not _dir_in(self.lower, m) for m in self.spec.tmpfs):
            return True
        if any(not _dir_in(self.lower, b.destination) for b in self.spec.binds):
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
            from closedpaw.sandbox.images.overlay import mount_overlay  # ctypes: only here

            if self.root_view:   # the read-only view gives way to the writable overlay
                from closedpaw.sandbox.host.files import unmount_output

                unmount_output(self.dir / "rootfs")
                os.rmdir(self.dir / "rootfs")
                self.root_view = False
            mount_overlay(self.lower, self.dir / "layer", self.dir / "rootfs",
                          self.spec.limits.disk_mb, name_lower=False)   # the host skeleton
            self.overlay = True
            config = build_config(self._inputs(argv, env, cwd))  # the root is the overlay now
        if self.ids is not None:
            _keep_locked_flags(config["mounts"])
        check_config(config, host_limits())
        if self.overlay and self.ids is not None:
            self._make_mount_points(config["mounts"], cwd)
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
            agent_dir=None if self.agent_dir is None else self._stage_agent(),
            run_dir=self.run_dir,
            usr_source="/usr" if self.spec.image == HOST_IMAGE else None,
            usr_local=self.spec.usr_local,
            readonly_root=self.readonly_root, tmpfs=self.spec.tmpfs, annotations=annotations,
            binds=[(str(b.source), b.destination, b.writable) for b in self.spec.binds],
            agent_init=self.agent_dir is not None,
            userns=None if self.ids is None else IdMap(
                str(self.dir / USERNS_FILE), self.ids.host_base, self.ids.size),
        )

    def _make_mount_points(self, mounts: Sequence[Mapping[str, Any]], cwd: str) -> None:
        """Create missing mount points and the working directory in this sandbox's own
        overlay, from the host. In a user namespace the runtime makes them as the sandbox's
        root, which may not write the image's root-owned directories. Only real directories
        of the overlay are walked (never a link: ``O_NOFOLLOW`` at each step), and nothing
        under another mount is touched; what cannot be made is left to the runtime."""
        dests = [m["destination"] for m in mounts]
        # runc gives a tmpfs the mode of an existing mount point: make it the mount's own
        modes = {m["destination"]: int(o[5:], 8) for m in mounts for o in m["options"]
                 if m["type"] == "tmpfs" and o.startswith("mode=")}
        todo = [d for d in dests
                if not any(o != d and _under(d, o) for o in dests)]
        if not any(_under(cwd, d) for d in dests):
            todo.append(cwd)
        for dest in todo:
            parts = [p for p in dest.split("/") if p and p != "."]
            if ".." in parts:
                continue
            fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for i, part in enumerate(parts):
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        if i == len(parts) - 1 and dest in modes:
                            os.chmod(part, modes[dest], dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
            except OSError:
                pass  # a link or a file on the way: the runtime decides (and may refuse)
            finally:
                os.close(fd)

    def write_process(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                      cwd: str) -> Path:
        """An OCI process.json for ``exec``, with the same user, caps and rlimits."""
        base = dict(self.config["process"])
        base.update(args=list(argv), env=merge_env(self.spec.env, env), cwd=cwd,
                    user={"uid": SANDBOX_UID, "gid": SANDBOX_GID,
                          "additionalGids": [SANDBOX_GID]},
                    capabilities={k: [] for k in ("bounding", "effective", "inheritable",
                                                  "permitted", "ambient")})
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

    def release_ownership(self) -> None:
        """Drop the ownership lock without removing anything: what is left becomes
        garbage that ``closedpaw gc`` (of any process) may remove."""
        fd, self._lock_fd = self._lock_fd, None
        ownership.release(fd)

    def _remove_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        ownership.remove(self.dir, fd)

    def teardown(self) -> None:
        """Unmount, remove cgroups and the state dir. Idempotent; raises the first error."""
        if self._torn_down:
            return
        first: BaseException | None = None
        steps = [self.cgroups.remove]
        if self.root_view or any(m is not None for m in (self.output_mount, self.files_mount,
                                                        self.agent_mount)):
            # (the files module loads only for a sandbox with a mount of its own)
            from closedpaw.sandbox.host.files import unmount_output
        if self.output_mount is not None:
            out = self.output_mount
            steps.append(lambda: unmount_output(out))
        if self.files_mount is not None:
            staged = self.files_mount
            steps.append(lambda: unmount_output(staged))
        if self.agent_mount is not None:
            agent = self.agent_mount
            steps.append(lambda: unmount_output(agent))
        if self.overlay:
            from closedpaw.sandbox.images.overlay import unmount_overlay

            steps.append(lambda: unmount_overlay(self.dir / "layer", self.dir / "rootfs"))
        if self.root_view:
            steps.append(lambda: unmount_output(self.dir / "rootfs"))
        for via in self._via.values():
            steps.append(lambda via=via: userns.unbind(via))  # type: ignore[misc]
        if self.ids is not None:
            ids = self.ids
            steps.append(lambda: userns.remove_namespace(self.dir / USERNS_FILE))
            steps.append(lambda: userns.release(ids))  # the container is gone already
        steps.append(self._remove_dir)
        for step in steps:
            if step == self._remove_dir and first is not None and self._via:
                break  # a bind may still be mounted: never remove the dir through it
            try:
                step()
            except Exception as e:
                first = first or e
        self._torn_down = first is None
        if first is not None:
            raise first


