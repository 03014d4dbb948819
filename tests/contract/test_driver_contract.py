"""ONE suite for every driver: the fake always, runc and runsc for real. What passes here for
the fake is what the layers above may rely on from the real drivers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.errors import SandboxLimitReached, SandboxNotFound, SandboxStateError
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.lifecycle.status import SandboxStatus
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings
from tests.conftest import leftovers, require_runtime, sandbox_settings

SPEC = SandboxSpec(limits=ResourceLimits(memory_mb=128, timeout_s=30, max_processes=32))


@pytest.fixture(params=["fake", "runc", "runsc"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SandboxManager]:
    name = request.param
    if name == "fake":
        s = Settings.of(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_sandboxes=3)
        m = SandboxManager(s, driver=FakeDriver())
    else:
        require_runtime(name)
        s = sandbox_settings().with_(runtime=name, max_sandboxes=3)
        m = SandboxManager(s)
    yield m
    m.cleanup()
    if name != "fake":
        assert not leftovers(s), leftovers(s)
    assert not m.reaper.errors
    assert not list((s.state_dir / "sandboxes").glob("*")) if (
        s.state_dir / "sandboxes").exists() else True


def test_stdout_and_exit_code(engine: SandboxManager) -> None:
    r = engine.run(["echo", "hello", "world"], SPEC)
    assert r.exit_code == 0 and r.stdout == b"hello world\n" and r.ok
    assert r.sandbox_id.startswith("cp-")
    assert engine.run(["false"], SPEC).exit_code == 1
    assert engine.run(["sh", "-c", "exit 7"], SPEC).exit_code == 7


def test_stdin_is_delivered(engine: SandboxManager) -> None:
    assert engine.run(["cat"], SPEC, stdin=b"ping\n").stdout == b"ping\n"


def test_missing_command_is_127_not_an_exception(engine: SandboxManager) -> None:
    r = engine.run(["no-such-command-xyz"], SPEC)
    assert r.exit_code == 127
    assert b"no-such-command-xyz" in r.stderr


def test_timeout_kills(engine: SandboxManager) -> None:
    spec = SandboxSpec(limits=ResourceLimits(timeout_s=0.5))
    r = engine.run(["sleep", "30"], spec)
    assert r.timed_out and r.exit_code == 137 and not r.ok
    assert r.duration_ms < 15_000


def test_isolation_is_stamped(engine: SandboxManager) -> None:
    r = engine.run(["true"], SPEC)
    iso = r.isolation
    assert iso.runtime == engine.driver().name
    assert iso.user == "65534:65534" and iso.capabilities == ()
    assert iso.no_new_privileges and iso.network == "none"
    assert iso.memory_limit_mb == 128 and iso.pids_limit == 32
    if iso.runtime != "fake":
        assert iso.seccomp and iso.seccomp_syscalls > 200
        assert r.usage.cpu_time_ms is not None and r.usage.cpu_time_ms > 0
        assert r.usage.peak_memory_bytes is not None and r.usage.peak_memory_bytes > 0


def test_long_lived_lifecycle(engine: SandboxManager) -> None:
    sb = engine.create(SPEC)
    assert sb.status is SandboxStatus.RUNNING
    assert [i.id for i in engine.list()] == [sb.id]
    assert engine.status(sb.id) is SandboxStatus.RUNNING
    for i in range(3):
        assert sb.commands.run(["echo", str(i)]).stdout == f"{i}\n".encode()
    assert sb.exec(["cat"], stdin=b"x").stdout == b"x"
    sb.pause()
    assert engine.status(sb.id) is SandboxStatus.PAUSED
    with pytest.raises(SandboxStateError):
        sb.exec(["true"])
    sb.resume()
    assert sb.exec(["true"]).exit_code == 0
    sb.stop(grace_s=5)
    assert sb.status is SandboxStatus.STOPPED
    with pytest.raises(SandboxStateError, match="stopped"):
        sb.exec(["true"])
    sb.delete()
    assert engine.list() == []
    with pytest.raises(SandboxNotFound):
        engine.get(sb.id)


def test_exec_timeout_kills_only_that_command(engine: SandboxManager) -> None:
    with engine.create(SPEC) as sb:
        r = sb.exec(["sleep", "30"], timeout_s=0.5)
        assert r.timed_out and r.exit_code == 137
        assert sb.exec(["echo", "alive"]).stdout == b"alive\n"
        assert sb.refresh_status() is SandboxStatus.RUNNING


def test_max_sandboxes_cap_and_cleanup(engine: SandboxManager) -> None:
    boxes = [engine.create(SPEC) for _ in range(3)]
    with pytest.raises(SandboxLimitReached, match="max_sandboxes"):
        engine.create(SPEC)
    with pytest.raises(SandboxLimitReached):
        engine.run(["true"], SPEC)
    assert engine.cleanup() == 3
    assert engine.list() == []
    assert all(b.status is SandboxStatus.STOPPED for b in boxes)
    assert engine.run(["true"], SPEC).exit_code == 0


def test_context_manager_deletes(engine: SandboxManager) -> None:
    with engine.create(SPEC) as sb:
        sid = sb.id
    assert sid not in [i.id for i in engine.list()]
    engine.reaper.drain()
    assert not (engine.settings.state_dir / "sandboxes" / sid).exists()
