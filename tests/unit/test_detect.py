"""Runtime selection: probes decide, answers are cached, and nothing passing means refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import ConfigError, RuntimeUnavailable
from closedpaw.sandbox.drivers.base import Driver
from closedpaw.sandbox.drivers.detect import RuntimeRegistry
from closedpaw.settings import Settings
from tests.conftest import require_runtime


class Prober:
    def __init__(self, ok: dict[str, bool]) -> None:
        self.ok = ok
        self.calls: list[str] = []

    def __call__(self, driver: Driver) -> tuple[bool, str]:
        self.calls.append(driver.name)
        return self.ok[driver.name], "scripted"


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    for name in ("runc", "runsc"):
        require_runtime(name)


def _reg(tmp_path: Path, prober: Prober) -> RuntimeRegistry:
    return RuntimeRegistry(Settings.of(state_dir=tmp_path / "s", data_dir=tmp_path / "d"), prober)


def test_auto_prefers_runsc(tmp_path: Path) -> None:
    p = Prober({"runsc": True, "runc": True})
    assert _reg(tmp_path, p).resolve("auto").name == "runsc"
    assert p.calls == ["runsc"]


def test_auto_falls_back_to_runc(tmp_path: Path) -> None:
    p = Prober({"runsc": False, "runc": True})
    assert _reg(tmp_path, p).resolve("auto").name == "runc"


def test_nothing_passing_refuses_to_run(tmp_path: Path) -> None:
    p = Prober({"runsc": False, "runc": False})
    with pytest.raises(RuntimeUnavailable, match="fail closed"):
        _reg(tmp_path, p).resolve("auto")
    with pytest.raises(RuntimeUnavailable, match="runc is not usable"):
        _reg(tmp_path, p).resolve("runc")


def test_probe_once_then_cached_on_disk(tmp_path: Path) -> None:
    p = Prober({"runsc": True, "runc": True})
    reg = _reg(tmp_path, p)
    reg.resolve("runc")
    reg.resolve("runc")
    assert p.calls == ["runc"]
    p2 = Prober({"runsc": True, "runc": True})
    _reg(tmp_path, p2).resolve("runc")
    assert p2.calls == []  # answered from data_dir/probe.json
    assert (tmp_path / "d/probe.json").exists()
    p3 = Prober({"runsc": True, "runc": True})
    _reg(tmp_path, p3).probe("runc", fresh=True)
    assert p3.calls == ["runc"]


def test_failures_are_not_cached(tmp_path: Path) -> None:
    _reg(tmp_path, Prober({"runsc": False, "runc": False})).probe("runc")
    p = Prober({"runsc": True, "runc": True})
    assert _reg(tmp_path, p).resolve("runc").name == "runc"
    assert p.calls == ["runc"]


def test_unknown_runtime(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="docker"):
        _reg(tmp_path, Prober({})).resolve("docker")
