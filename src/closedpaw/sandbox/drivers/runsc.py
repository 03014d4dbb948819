"""runsc (gVisor): containers on a user-space kernel, the preferred driver.

Flags are fixed on purpose: ``--platform=ptrace`` (kvm hangs on hosts without working
nested virtualisation, and systrap does not exist in older releases), ``--network=none``
(loopback only) and ``--oci-seccomp`` (without it runsc ignores the bundle's seccomp profile).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from closedpaw.errors import RuntimeFailure
from closedpaw.sandbox.drivers.errors import map_runtime_error
from closedpaw.sandbox.drivers.features import DriverFeatures
from closedpaw.sandbox.drivers.oci_cli import OCICLIDriver, clean_env

__all__ = ["RunscDriver"]


class RunscDriver(OCICLIDriver):
    name = "runsc"
    install_hint = "install it with 'apt-get install runsc'"
    platform = "ptrace"

    def global_args(self) -> list[str]:
        return ["--root", str(self.root_dir), f"--platform={self.platform}", "--network=none",
                "--oci-seccomp"]

    def features(self) -> DriverFeatures:
        if self._features is None:
            self._features = DriverFeatures(
                name="runsc", version=self.version(), platform=f"gvisor-{self.platform}",
                seccomp=True, pids_mode="rlimit",
            )
        return self._features

    def exec_args(self, cid: str, process_json: Path, pid_file: Path | None) -> list[str]:
        # runsc's own pid namespace numbers the process; `runsc kill --pid` takes that number.
        pid = ["--internal-pid-file", str(pid_file)] if pid_file is not None else []
        return ["exec", "--process", str(process_json), *pid, cid]

    def kill_exec(self, cid: str, pid_file: Path) -> bool:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        try:
            p = self._call("kill", "kill", "--pid", str(pid), cid, "KILL", timeout=15,
                           ok_missing=True)
        except (RuntimeFailure, subprocess.TimeoutExpired):
            # "no such process": the command exited and what it left (`sleep &`) holds its
            # pipes; nothing of it is left to kill, and the caller stops waiting for the
            # pipes after a short grace
            return True
        return p.returncode == 0

    def checkpoint(self, cid: str, image_dir: Path) -> None:
        """Save the container's whole state into ``image_dir``; the container exits."""
        self._call("checkpoint", "checkpoint", f"--image-path={image_dir}", cid, timeout=120)

    def restore(self, cid: str, bundle: Path, image_dir: Path) -> None:
        """Start container ``cid`` from ``bundle``, resuming the state saved in
        ``image_dir`` instead of booting its init (detached, like :meth:`create`)."""
        self.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = bundle / "create.log"
        p = subprocess.run(self._cmd("restore", "--detach", f"--image-path={image_dir}",
                                     "--bundle", str(bundle), cid, log=log),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=clean_env(), timeout=120,
                           check=False)
        if p.returncode != 0:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            raise map_runtime_error(self.name, "restore", text, p.returncode)

    def list_args(self) -> list[str]:
        return ["list", "-quiet"]
