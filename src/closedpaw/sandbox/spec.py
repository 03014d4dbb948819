"""Typed requests of the sandbox engine: :class:`ResourceLimits`, :class:`SandboxSpec`,
:class:`ExecRequest`.

They are frozen dataclasses validated on construction, declared as
:class:`~closedpaw._record.Record` classes (the CLI imports this module on its hot path, so it
avoids ``dataclasses`` itself and heavier model libraries). ``from_dict`` refuses unknown
keys, the equivalent of ``extra="forbid"``, and every error names the field.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from closedpaw._record import Record, field, field_names, values
from closedpaw.errors import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T", bound=Record)

__all__ = ["ExecRequest", "HostBind", "ResourceLimits", "SandboxSpec", "parse_size_mb"]

# patterns, compiled on first use (re's cache): a plain run checks no env or code file names
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_IMAGE_NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
_CODE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# Where extra tmpfs mounts may not go: the kernel filesystems and the engine's own mounts.
_RESERVED_MOUNTS = ("/", "/proc", "/dev", "/sys", "/tmp", "/input", "/output", "/code", "/usr")

MIB = 1024 * 1024


def parse_size_mb(text: str, field_name: str = "size") -> int:
    """Parse ``512``, ``512m``, ``2g``, ``65536k`` into whole MiB (``k`` rounds up)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)[iI]?[bB]?\s*", text)
    if not m:
        raise SpecError(field_name, f"{text!r} is not a size such as 256m or 2g")
    n, unit = int(m.group(1)), m.group(2).lower()
    if unit == "k":
        return max(1, math.ceil(n / 1024))
    if unit == "g":
        return n * 1024
    return n


def _check_number(name: str, value: object, lo: float, hi: float, *, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(name, f"must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise SpecError(name, "must be a whole number")
    if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
        bounds = f"{int(lo)} and {int(hi)}" if integer else f"{lo:g} and {hi:g}"
        raise SpecError(name, f"must be between {bounds}, got {value!r}")


def _from_dict(cls: type[_T], data: Mapping[str, Any], where: str) -> _T:
    if not isinstance(data, Mapping):
        raise SpecError(where, "must be an object")
    known = set(field_names(cls))
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}" if where else unknown[0], "unknown field")
    return cls(**data)


class ResourceLimits(Record):
    """Limits enforced by the kernel (cgroups, rlimits, tmpfs sizes) and by the engine.

    ``timeout_s`` defaults to the design's 30 minutes; callers usually pass much less.
    """

    cpu_cores: float = 1.0
    memory_mb: int = 512
    disk_mb: int = 1024
    max_processes: int = 64
    network_enabled: bool = False
    timeout_s: float = 1800.0
    output_cap_bytes: int = MIB
    output_dir_mb: int = 64

    def __post_init__(self) -> None:
        _check_number("cpu_cores", self.cpu_cores, 0.01, 1024, integer=False)
        _check_number("memory_mb", self.memory_mb, 16, 1024 * 1024, integer=True)
        _check_number("disk_mb", self.disk_mb, 1, 1024 * 1024, integer=True)
        _check_number("max_processes", self.max_processes, 1, 4096, integer=True)
        _check_number("timeout_s", self.timeout_s, 0.001, 7 * 24 * 3600, integer=False)
        _check_number("output_cap_bytes", self.output_cap_bytes, 1, 1 << 30, integer=True)
        _check_number("output_dir_mb", self.output_dir_mb, 1, 1024 * 1024, integer=True)
        if not isinstance(self.network_enabled, bool):
            raise SpecError("network_enabled", "must be true or false")
        if self.network_enabled:
            # Fail closed: there is no network plumbing yet, so refuse instead of pretending.
            raise SpecError(
                "network_enabled",
                "networked sandboxes are not supported yet; sandboxes get loopback only",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceLimits:
        return _from_dict(cls, data, "limits")

    def to_dict(self) -> dict[str, Any]:
        return values(self)


#: host directories never bound into a sandbox (nor anything beneath them)
_FORBIDDEN_BIND_SOURCES = ("/proc", "/sys", "/dev", "/boot", "/etc", "/root", "/run",
                           "/var/lib/closedpaw", "/var/run")
_BIND_DEST_RESERVED = (*_RESERVED_MOUNTS, "/bin", "/sbin", "/lib", "/lib64", "/etc", "/var",
                       "/.closedpaw", "/run")


class HostBind(Record):
    """A host directory bound into the sandbox (a skill's declared capability): ``source``
    must be an existing real directory (no symlink anywhere in its path), never ``/`` nor a
    system directory; ``writable`` only when declared ``rw``."""

    source: Path
    destination: str
    writable: bool = False

    def __post_init__(self) -> None:
        src = Path(self.source)
        object.__setattr__(self, "source", src)
        key = f"binds.{self.destination}"
        d = self.destination
        if (not isinstance(d, str) or not d.startswith("/") or "\0" in d or d == "/"
                or ".." in d.split("/") or d.rstrip("/") != d or "//" in d):
            raise SpecError(key, "destination must be an absolute path without '..' or a "
                            "trailing /")
        if any(d == r or (r != "/" and d.startswith(r + "/")) for r in _BIND_DEST_RESERVED):
            raise SpecError(key, "destination is reserved for the engine's own mounts")
        s = str(src)
        if not src.is_absolute() or "\0" in s or s == "/" or ".." in src.parts:
            raise SpecError(key, f"source {s!r} must be an absolute host path, not /")
        if any(s == f or s.startswith(f + "/") for f in _FORBIDDEN_BIND_SOURCES):
            raise SpecError(key, f"source {s} is a system directory and is never bound")
        if os.path.realpath(s) != s:
            raise SpecError(key, f"source {s} is not its real path (a symbolic link on the "
                            "way); give the real directory")
        if not src.is_dir():
            raise SpecError(key, f"source {s} is not an existing directory")
        if not isinstance(self.writable, bool):
            raise SpecError(key, "writable must be true or false")


class SandboxSpec(Record):
    """What a sandbox looks like: its limits, environment, working directory and files.

    ``env`` is the *whole* environment of sandboxed processes on top of a minimal base
    (PATH, HOME, LANG); nothing is inherited from the host. ``input_path`` (a file or
    directory on the host) is copied to ``/input`` read-only; when ``output_dir`` is set,
    ``/output`` is writable (capped at ``limits.output_dir_mb``) and collected there; an
    existing entry there is replaced (a directory merged into) only with
    ``output_overwrite=True``, otherwise it is kept and reported as skipped.

    ``image`` names the root filesystem: ``host`` (the host's /usr, read-only) or an image of
    the store. ``readonly_root``: ``None`` means the image's default - read-only for
    ``host``; for store images a writable per-sandbox overlay (upper layer on a tmpfs of
    ``limits.disk_mb``) that vanishes with the sandbox. ``usr_local``: the ``host`` image
    also shows the host's ``/usr/local`` (hidden by default). ``tmpfs`` adds sized tmpfs mounts
    (path -> MiB). ``code_files`` (name -> text) are written read-only under ``/code``.
    ``secret_files`` (name -> value) are written read-only (0400, the sandbox user's) under
    ``/run/secrets`` (a read-only bind of the sandbox's own ``run`` directory on ``/run``);
    their values, like ``env``'s, never appear in the spec's repr.
    """

    limits: ResourceLimits = field(default_factory=ResourceLimits)
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/tmp"
    image: str = "host"
    input_path: Path | None = None
    output_dir: Path | None = None
    output_overwrite: bool = False
    usr_local: bool = False
    readonly_root: bool | None = None
    tmpfs: Mapping[str, int] = field(default_factory=dict)
    code_files: Mapping[str, str] = field(default_factory=dict)
    binds: tuple[HostBind, ...] = ()
    secret_files: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.limits, ResourceLimits):
            raise SpecError("limits", "must be a ResourceLimits")
        if not isinstance(self.env, Mapping):
            raise SpecError("env", "must be a mapping of names to strings")
        for k, v in self.env.items():
            if not isinstance(k, str) or not re.fullmatch(_ENV_NAME, k):
                raise SpecError(f"env.{k}", "is not a valid variable name")
            if not isinstance(v, str) or "\0" in v:
                raise SpecError(f"env.{k}", "value must be a string without NUL bytes")
        if not isinstance(self.workdir, str) or not self.workdir.startswith("/"):
            raise SpecError("workdir", "must be an absolute path inside the sandbox")
        if ".." in self.workdir.split("/") or "\0" in self.workdir:
            raise SpecError("workdir", "must not contain '..' or NUL")
        if not isinstance(self.image, str) or (  # the default needs no pattern compiled
                self.image != "host" and not re.fullmatch(_IMAGE_NAME, self.image)):
            raise SpecError("image", f"{self.image!r} is not an image name (lower-case "
                            "letters, digits, '.', '_', '-')")
        if not isinstance(self.output_overwrite, bool):
            raise SpecError("output_overwrite", "must be true or false")
        if not isinstance(self.usr_local, bool):
            raise SpecError("usr_local", "must be true or false")
        if self.readonly_root is not None and not isinstance(self.readonly_root, bool):
            raise SpecError("readonly_root", "must be true, false or unset")
        if not isinstance(self.tmpfs, Mapping):
            raise SpecError("tmpfs", "must be a mapping of absolute paths to sizes in MiB")
        for path, size in self.tmpfs.items():
            key = f"tmpfs.{path}"
            if (not isinstance(path, str) or not path.startswith("/") or "\0" in path
                    or ".." in path.split("/") or path.rstrip("/") != path):
                raise SpecError(key, "must be an absolute path without '..' or a trailing /")
            if any(path == r or (r != "/" and path.startswith(r + "/"))
                   for r in _RESERVED_MOUNTS):
                raise SpecError(key, "is reserved for the engine's own mounts")
            _check_number(key, size, 1, 1024 * 1024, integer=True)
        if not isinstance(self.code_files, Mapping):
            raise SpecError("code_files", "must be a mapping of file names to text")
        for cname, text in self.code_files.items():
            if not isinstance(cname, str) or not re.fullmatch(_CODE_NAME, cname):
                raise SpecError(f"code_files.{cname}", "must be a plain file name")
            if not isinstance(text, str):
                raise SpecError(f"code_files.{cname}", "must be text")
        object.__setattr__(self, "binds", tuple(self.binds))
        seen: set[str] = set()
        for b in self.binds:
            if not isinstance(b, HostBind):
                raise SpecError("binds", "must be HostBind entries")
            if b.destination in seen or b.destination in self.tmpfs:
                raise SpecError(f"binds.{b.destination}", "is mounted twice")
            seen.add(b.destination)
        if not isinstance(self.secret_files, Mapping):
            raise SpecError("secret_files", "must be a mapping of file names to values")
        for sname, value in self.secret_files.items():
            if not isinstance(sname, str) or not re.fullmatch(_CODE_NAME, sname):
                raise SpecError(f"secret_files.{sname}", "must be a plain file name")
            if not isinstance(value, str):
                raise SpecError(f"secret_files.{sname}", "must be text")
        if self.secret_files and any(p == "/run" or p.startswith("/run/") for p in self.tmpfs):
            raise SpecError("tmpfs", "/run is where secret files are mounted (read-only)")
        if self.input_path is not None:
            object.__setattr__(self, "input_path", Path(self.input_path))
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", Path(self.output_dir))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxSpec:
        data = dict(data)
        if "limits" in data and isinstance(data["limits"], Mapping):
            data["limits"] = ResourceLimits.from_dict(data["limits"])
        return _from_dict(cls, data, "")


class ExecRequest(Record):
    """One command to run: argv (no shell), optional stdin bytes, env additions, timeout."""

    argv: Sequence[str]
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or not isinstance(self.argv, Sequence):
            raise SpecError("argv", "must be a list of strings (no shell string)")
        if not self.argv:
            raise SpecError("argv", "must not be empty")
        for a in self.argv:
            if not isinstance(a, str) or "\0" in a:
                raise SpecError("argv", "every argument must be a string without NUL bytes")
        object.__setattr__(self, "argv", tuple(self.argv))
        if not isinstance(self.stdin, bytes):
            raise SpecError("stdin", "must be bytes")
        # Reuse SandboxSpec's checks for env and workdir.
        SandboxSpec(env=self.env, workdir=self.workdir or "/tmp")
        if self.timeout_s is not None:
            _check_number("timeout_s", self.timeout_s, 0.001, 7 * 24 * 3600, integer=False)
