"""Shared machinery for drivers that wrap an OCI runtime command line (runc, runsc)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from closedpaw.errors import RuntimeUnavailable
from closedpaw.sandbox.drivers.errors import map_runtime_error
from closedpaw.sandbox.drivers.features import DriverFeatures

__all__ = ["OCICLIDriver", "clean_env"]

# Runtime messages that mean "that container (or its whole sandbox) no longer exists or no
# longer runs": a kill or delete of it has nothing left to do. "connection refused" is runsc
# failing to reach the control server of a Sentry that died (e.g. picked by the OOM killer);
# a missing "<id>.state" file is a runsc delete that was cut short (its owner was killed).
_GONE = ("does not exist", "not exist", "not found", "not running", "container is stopped",
         "connection refused", ".state: no such file or directory")

_SEARCH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")


def clean_env() -> dict[str, str]:
    """The runtime's own environment: nothing of the caller's but a fixed PATH."""
    return {"PATH": ":".join(_SEARCH)}


_PRLIMIT = "/usr/bin/prlimit"
_HOST_RLIMITS = "org.closedpaw.host-rlimits"   # bundle.oci.HOST_RLIMITS_ANNOTATION


def host_rlimits(bundle: Path) -> list[str]:
    """A ``prlimit`` prefix applying the bundle's host-applied rlimits to the runtime process
    (and so to the container it starts), or ``[]``. A sandbox with a user namespace carries
    its rlimits this way: runc would set them with prlimit() on the container, which needs
    CAP_SYS_RESOURCE over it, and lowering one's own limits needs nothing."""
    try:
        with open(bundle / "config.json") as f:
            declared = json.load(f).get("annotations", {}).get(_HOST_RLIMITS)
    except (OSError, ValueError):
        return []
    if not declared:
        return []
    opts = [f"--{r['type'].removeprefix('RLIMIT_').lower()}={r['soft']}:{r['hard']}"
            for r in json.loads(declared)]
    return [_PRLIMIT, *opts, "--"]


def find_binary(name: str) -> str | None:
    """The runtime binary, looked up in the system directories only: never the caller's PATH,
    so a directory earlier on PATH cannot substitute its own "runsc"."""
    for d in _SEARCH:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _descendants(pid: int) -> list[int]:
    """Host pids of every live descendant of ``pid`` (read from /proc)."""
    kids: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        try:
            with open(f"/proc/{e.name}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(e.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


class OCICLIDriver:
    """Drives a runc-compatible CLI. Subclasses set ``name`` and ``global_args``."""

    name = "oci"
    install_hint = ""

    def __init__(self, root_dir: Path, binary: str | None = None) -> None:
        self.root_dir = Path(root_dir)
        found = binary or find_binary(self.name)
        if not found:
            raise RuntimeUnavailable(f"{self.name} is not installed; {self.install_hint}")
        self.binary = found
        self._features: DriverFeatures | None = None
        self._version: str | None = None

    # -- helpers --------------------------------------------------------------------------
    def global_args(self) -> list[str]:
        return ["--root", str(self.root_dir)]

    def _cmd(self, *args: str, log: Path | None = None) -> list[str]:
        logging = ["--log", str(log), "--log-format", "json"] if log is not None else []
        return [self.binary, *self.global_args(), *logging, *args]

    def _call(self, action: str, *args: str, timeout: float = 30.0,
              ok_missing: bool = False) -> subprocess.CompletedProcess[str]:
        self.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                           env=clean_env(), stdin=subprocess.DEVNULL, check=False)
        if p.returncode != 0:
            low = p.stderr.lower()
            if ok_missing and any(g in low for g in _GONE):
                return p
            raise map_runtime_error(self.name, action, p.stderr, p.returncode)
        return p

    def _spawn(self, args: Sequence[str], *, stdin: bool,
               log: Path | None, bundle: Path | None = None) -> subprocess.Popen[bytes]:
        self.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        prefix = host_rlimits(bundle) if bundle is not None else []
        return subprocess.Popen(
            [*prefix, *self._cmd(*args, log=log)],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=clean_env(), start_new_session=True, close_fds=True,
        )

    def adopt_version(self, version: str) -> None:
        """Use a version read earlier from this very binary (the probe cache keys it by path,
        size and mtime), sparing a ``--version`` subprocess on every CLI start."""
        if version and self._features is None:
            self._version = version

    def version(self) -> str:
        if self._version is not None:
            return self._version
        try:
            p = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                               timeout=10, env=clean_env(), check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        first = p.stdout.strip().splitlines()
        return first[0].split()[-1] if first else "unknown"

    # -- Driver protocol ---------------------------------------------------------------------
    def features(self) -> DriverFeatures:
        raise NotImplementedError

    def run(self, cid: str, bundle: Path, *, stdin: bool,
            log: Path | None = None) -> subprocess.Popen[bytes]:
        return self._spawn(["run", "--bundle", str(bundle), cid], stdin=stdin, log=log,
                           bundle=bundle)

    def create(self, cid: str, bundle: Path) -> None:
        # Detached: the container inherits this call's stdio, so give it /dev/null and keep
        # the runtime's own messages in a log file.
        self.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = bundle / "create.log"
        p = subprocess.run([*host_rlimits(bundle),
                            *self._cmd("run", "--detach", "--bundle", str(bundle), cid, log=log)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=clean_env(), timeout=60, check=False)
        if p.returncode != 0:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            raise map_runtime_error(self.name, "create", text, p.returncode)

    def exec(self, cid: str, process_json: Path, *, stdin: bool, log: Path | None = None,
             pid_file: Path | None = None) -> subprocess.Popen[bytes]:
        return self._spawn(self.exec_args(cid, process_json, pid_file), stdin=stdin, log=log,
                           bundle=process_json.parent)

    def exec_args(self, cid: str, process_json: Path, pid_file: Path | None) -> list[str]:
        pid = ["--pid-file", str(pid_file)] if pid_file is not None else []
        return ["exec", "--process", str(process_json), *pid, cid]

    def kill_exec(self, cid: str, pid_file: Path) -> bool:
        """SIGKILL one exec'd process and its descendants (by host pid, each checked to be
        in this container). True when nothing of it is left to kill (it had exited); False
        while its pid is not known yet."""
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        for p in [pid, *_descendants(pid)]:
            try:
                with open(f"/proc/{p}/cgroup") as f:
                    if f"/{cid}/" not in f.read():
                        continue
                os.kill(p, 9)
            except (OSError, ValueError):
                continue
        return True

    def kill(self, cid: str, signal: str = "KILL", *, all_processes: bool = False) -> bool:
        args = ["kill", *self.kill_all_flag(all_processes), cid, signal]
        p = self._call("kill", *args, timeout=15, ok_missing=True)
        return p.returncode == 0

    def kill_all_flag(self, all_processes: bool) -> list[str]:
        return ["--all"] if all_processes else []

    def pause(self, cid: str) -> None:
        self._call("pause", "pause", cid, timeout=30)

    def resume(self, cid: str) -> None:
        self._call("resume", "resume", cid, timeout=30)

    def delete(self, cid: str) -> None:
        self._call("delete", "delete", "--force", cid, timeout=60, ok_missing=True)

    def state(self, cid: str) -> str | None:
        p = self._call("state", "state", cid, timeout=15, ok_missing=True)
        if p.returncode != 0:
            return None
        try:
            status = json.loads(p.stdout).get("status")
        except (ValueError, AttributeError):
            return None
        return str(status) if status else None

    def list_ids(self) -> list[str]:
        if not self.root_dir.exists():
            return []
        p = self._call("list", *self.list_args(), timeout=15)
        return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]

    def list_args(self) -> list[str]:
        return ["list", "--quiet"]

    def state_pid(self, cid: str) -> int | None:
        p = self._call("state", "state", cid, timeout=15, ok_missing=True)
        if p.returncode != 0:
            return None
        try:
            pid = int(json.loads(p.stdout).get("pid") or 0)
        except (ValueError, TypeError, AttributeError):
            return None
        return pid if pid > 0 and os.path.exists(f"/proc/{pid}") else None
