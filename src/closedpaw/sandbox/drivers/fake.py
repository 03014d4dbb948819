"""FakeDriver: a real, in-process implementation of the Driver protocol for unit tests.

It runs nothing on the host. Commands are answered by a handler, like ``httpx.MockTransport``:
``handler(argv, stdin) -> (exit_code, stdout, stderr)``; a handler may also sleep to act out a
slow command. Containers, their states and every call are recorded for assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from closedpaw.errors import RuntimeFailure
from closedpaw.sandbox.drivers.features import DriverFeatures

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

__all__ = ["FakeDriver", "FakeProcess", "Handler"]

Handler = Callable[[Sequence[str], bytes], tuple[int, bytes, bytes]]


def _default_handler(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """A few commands, enough for the contract suite: echo, cat, true, false, sh -c 'exit N'.
    ``sleep N`` is acted out by :class:`FakeProcess` itself (it can be killed)."""
    name = argv[0].rsplit("/", 1)[-1]
    if name == "echo":
        return 0, (" ".join(argv[1:]) + "\n").encode(), b""
    if name == "cat":
        return 0, stdin, b""
    if name in ("true", "false"):
        return (0 if name == "true" else 1), b"", b""
    if name == "sh" and argv[1:2] == ["-c"] and argv[2].startswith("exit "):
        return int(argv[2].split()[1]), b"", b""
    return 127, b"", f"fake: {argv[0]}: command not found\n".encode()


class FakeProcess:
    """Runs the handler on a thread and exposes its output through real pipes."""

    def __init__(self, argv: Sequence[str], handler: Handler, stdin: bool) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self._killed = threading.Event()
        self._done = threading.Event()
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        self.stdout: IO[bytes] | None = open(out_r, "rb", buffering=0)  # noqa: SIM115
        self.stderr: IO[bytes] | None = open(err_r, "rb", buffering=0)  # noqa: SIM115
        self._in_r: int | None = None
        self.stdin: IO[bytes] | None = None
        if stdin:
            self._in_r, in_w = os.pipe()
            self.stdin = open(in_w, "wb", buffering=0)  # noqa: SIM115
        self._t = threading.Thread(target=self._go, args=(list(argv), handler), daemon=True)
        self._t.start()

    def _go(self, argv: list[str], handler: Handler) -> None:
        data = b""
        if self._in_r is not None:
            with open(self._in_r, "rb") as f:
                data = f.read()
        try:
            if argv[0].rsplit("/", 1)[-1] == "sleep":
                self._killed.wait(float(argv[1]))
                code, out, err = 0, b"", b""
            else:
                code, out, err = handler(argv, data)
        except Exception as e:
            code, out, err = 126, b"", f"fake handler error: {e}\n".encode()
        if self._killed.is_set():
            code = 137
        for fd, blob in ((self._out_w, out), (self._err_w, err)):
            with contextlib.suppress(OSError):
                os.write(fd, blob)
            os.close(fd)
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait(timeout)
        if self.returncode is None:
            raise TimeoutError("fake process still running")
        return self.returncode

    def kill(self) -> None:
        self._killed.set()


class FakeDriver:
    """In-memory containers; ``calls`` records ``(method, container_id)`` pairs."""

    name = "fake"

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or _default_handler
        self.containers: dict[str, str] = {}
        self.bundles: dict[str, dict[str, object]] = {}
        self.calls: list[tuple[str, str]] = []
        self.processes: list[FakeProcess] = []

    def features(self) -> DriverFeatures:
        return DriverFeatures(name="fake", version="0", platform="none", seccomp=False,
                              pids_mode="cgroup", memory_cgroup=False, cpu_cgroup=False)

    def _load(self, bundle: Path) -> dict[str, object]:
        with open(bundle / "config.json") as f:
            cfg: dict[str, object] = json.load(f)
        return cfg

    def run(self, cid: str, bundle: Path, *, stdin: bool,
            log: Path | None = None) -> FakeProcess:
        self.calls.append(("run", cid))
        cfg = self._load(bundle)
        self.bundles[cid] = cfg
        argv = cfg["process"]["args"]  # type: ignore[index]
        p = FakeProcess(argv, self.handler, stdin)
        self.processes.append(p)
        return p

    def create(self, cid: str, bundle: Path) -> None:
        self.calls.append(("create", cid))
        if cid in self.containers:
            raise RuntimeFailure("fake", "create", f"container {cid} already exists")
        self.bundles[cid] = self._load(bundle)
        self.containers[cid] = "running"

    def exec(self, cid: str, process_json: Path, *, stdin: bool, log: Path | None = None,
             pid_file: Path | None = None) -> FakeProcess:
        self.calls.append(("exec", cid))
        if self.containers.get(cid) != "running":
            raise RuntimeFailure("fake", "exec", f"container {cid} is not running")
        with open(process_json) as f:
            argv = json.load(f)["args"]
        p = FakeProcess(argv, self.handler, stdin)
        self.processes.append(p)
        if pid_file is not None:
            pid_file.write_text(str(len(self.processes)))
        return p

    def kill_exec(self, cid: str, pid_file: Path) -> bool:
        self.calls.append(("kill_exec", cid))
        try:
            self.processes[int(pid_file.read_text()) - 1].kill()
        except (OSError, ValueError, IndexError):
            return False
        return True

    def kill(self, cid: str, signal: str = "KILL", *, all_processes: bool = False) -> bool:
        self.calls.append((f"kill:{signal}", cid))
        if cid not in self.containers:
            return False
        for p in self.processes:
            p.kill()
        self.containers[cid] = "stopped"
        return True

    def pause(self, cid: str) -> None:
        self.calls.append(("pause", cid))
        self.containers[cid] = "paused"

    def resume(self, cid: str) -> None:
        self.calls.append(("resume", cid))
        self.containers[cid] = "running"

    def delete(self, cid: str) -> None:
        self.calls.append(("delete", cid))
        self.containers.pop(cid, None)

    def state(self, cid: str) -> str | None:
        return self.containers.get(cid)

    def list_ids(self) -> list[str]:
        return sorted(self.containers)

