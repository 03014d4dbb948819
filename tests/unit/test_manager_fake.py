"""Manager and Sandbox behaviour on the FakeDriver (no root, nothing runs on the host)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from closedpaw.errors import RuntimeFailure, SandboxStateError, SpecError
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings


def _mgr(tmp_path: Path, driver: FakeDriver) -> SandboxManager:
    return SandboxManager(Settings.of(state_dir=tmp_path / "s", data_dir=tmp_path / "d"),
                          driver=driver)


def test_output_cap_and_totals(tmp_path: Path) -> None:
    def big(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        return 0, b"o" * 5000, b"e" * 10

    with _mgr(tmp_path, FakeDriver(big)) as m:
        r = m.run(["x"], SandboxSpec(limits=ResourceLimits(output_cap_bytes=100)))
    assert r.stdout == b"o" * 100 and r.stdout_truncated and r.stdout_total_bytes == 5000
    assert r.stderr == b"e" * 10 and not r.stderr_truncated and r.truncated
    d = r.to_dict()
    assert d["truncated"] is True and d["stdout"] == "o" * 100
    assert set(d) >= {"exit_code", "stdout", "stderr", "timed_out", "oom_killed",
                      "duration_ms", "isolation", "usage"}


def test_the_bundle_given_to_the_driver_is_validated_and_clean(tmp_path: Path) -> None:
    fake = FakeDriver()
    with _mgr(tmp_path, fake) as m:
        r = m.run(["echo", "x"], SandboxSpec(env={"FOO": "bar"}), env={"BAZ": "1"})
    cfg = fake.bundles[r.sandbox_id]
    env = dict(e.split("=", 1) for e in cfg["process"]["env"])  # type: ignore[index]
    assert env["FOO"] == "bar" and env["BAZ"] == "1" and "PYTHONPATH" not in env
    assert cfg["process"]["user"]["uid"] == 65534  # type: ignore[index]


def test_teardown_happens_off_the_callers_path_but_happens(tmp_path: Path) -> None:
    fake = FakeDriver()
    m = _mgr(tmp_path, fake)
    r = m.run(["echo"])
    m.reaper.drain()
    assert not (tmp_path / "s/sandboxes" / r.sandbox_id).exists()
    m.close()


def test_exception_in_sink_kills_and_cleans(tmp_path: Path) -> None:
    fake = FakeDriver(lambda a, s: (0, b"data", b""))
    m = _mgr(tmp_path, fake)

    def sink(name: str, data: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.run(["x"], sink=sink)
    m.close()
    assert list((tmp_path / "s/sandboxes").iterdir()) == []


def test_slow_handler_times_out(tmp_path: Path) -> None:
    with _mgr(tmp_path, FakeDriver()) as m:
        t = time.monotonic()
        r = m.run(["sleep", "20"], SandboxSpec(limits=ResourceLimits(timeout_s=0.2)))
        assert r.timed_out and time.monotonic() - t < 10


def test_create_failure_leaves_error_state_and_nothing_behind(tmp_path: Path) -> None:
    class Broken(FakeDriver):
        def create(self, cid: str, bundle: Path) -> None:
            raise RuntimeFailure("fake", "create", "boom", "try again")

    m = _mgr(tmp_path, Broken())
    with pytest.raises(RuntimeFailure, match="boom"):
        m.create()
    m.close()
    assert m.list() == []
    assert list((tmp_path / "s/sandboxes").iterdir()) == []


def test_state_errors(tmp_path: Path) -> None:
    with _mgr(tmp_path, FakeDriver()) as m:
        sb = m.create()
        with pytest.raises(SandboxStateError):
            sb.resume()
        with pytest.raises(SandboxStateError):
            sb.start()
        with pytest.raises(SpecError):
            sb.exec("echo hi")  # type: ignore[arg-type]
        sb.delete()
        assert sb.status is SandboxStatus.STOPPED
        sb.delete()  # idempotent


def test_stop_is_term_then_kill(tmp_path: Path) -> None:
    class Stubborn(FakeDriver):
        def kill(self, cid: str, signal: str = "KILL", *, all_processes: bool = False) -> bool:
            self.calls.append((f"kill:{signal}", cid))
            if signal == "KILL":
                self.containers[cid] = "stopped"
            return cid in self.containers

    fake = Stubborn()
    with _mgr(tmp_path, fake) as m:
        sb = m.create()
        sb.stop(grace_s=0.1)
        kills = [c for c, _ in fake.calls if c.startswith("kill:")]
        assert kills == ["kill:TERM", "kill:KILL"]
