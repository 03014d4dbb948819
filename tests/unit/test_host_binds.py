"""Declared host binds (a skill's capabilities): validated in the spec, ro unless declared
rw, and a writable bind nobody declared is refused by the bundle's named check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import SpecError
from closedpaw.sandbox.bundle import BundleInputs, HostLimits, build_config, failures
from closedpaw.sandbox.bundle.mounts import RW_BINDS_ANNOTATION
from closedpaw.sandbox.bundle.oci import merge_env
from closedpaw.sandbox.spec import HostBind, ResourceLimits, SandboxSpec

HOST = HostLimits(nofile_hard=20000, nproc_hard=96365)


def config(binds: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return build_config(BundleInputs(
        argv=["true"], env=merge_env({}), cwd="/tmp", limits=ResourceLimits(),
        rootfs=Path("/var/lib/closedpaw/rootfs/host-x"), cgroups_path="/closedpaw/cp-1/ctr",
        host=HOST, machine="x86_64", binds=binds))


def test_ro_and_declared_rw_binds_pass_the_checks(tmp_path: Path) -> None:
    c = config([(str(tmp_path), "/data", False), (str(tmp_path), "/out", True)])
    m = {x["destination"]: x for x in c["mounts"]}
    assert {"ro", "nosuid", "nodev"} <= set(m["/data"]["options"])
    assert {"rw", "nosuid", "nodev"} <= set(m["/out"]["options"])
    assert c["annotations"][RW_BINDS_ANNOTATION] == "/out"
    assert failures(c, HOST) == []


def test_a_writable_bind_nobody_declared_is_refused(tmp_path: Path) -> None:
    c = config([(str(tmp_path), "/data", False)])
    next(x for x in c["mounts"] if x["destination"] == "/data")["options"][1] = "rw"
    assert ("mounts_are_safe", "writable bind at /data") in failures(c, HOST)


@pytest.mark.parametrize(("src", "dst", "why"), [
    ("/etc", "/data", "system directory"),
    ("/etc/ssl", "/data", "system directory"),
    ("/proc/1", "/data", "system directory"),
    ("/", "/data", "not /"),
    ("{tmp}/missing", "/data", "not an existing directory"),
    ("{tmp}/link", "/data", "not its real path"),
    ("{tmp}/d", "/usr/lib", "reserved"),
    ("{tmp}/d", "/input", "reserved"),
    ("{tmp}/d", "/tmp/x", "reserved"),
    ("{tmp}/d", "/data/../etc", "without '..'"),
])
def test_bad_binds_are_refused_naming_them(tmp_path: Path, src: str, dst: str,
                                           why: str) -> None:
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "link")
    with pytest.raises(SpecError, match=why):
        HostBind(Path(src.format(tmp=tmp_path)), dst)


def test_a_destination_mounted_twice_is_refused(tmp_path: Path) -> None:
    b = HostBind(tmp_path, "/data")
    with pytest.raises(SpecError, match="mounted twice"):
        SandboxSpec(binds=(b, HostBind(tmp_path, "/data", True)))
    with pytest.raises(SpecError, match="mounted twice"):
        SandboxSpec(binds=(b,), tmpfs={"/data": 1})
