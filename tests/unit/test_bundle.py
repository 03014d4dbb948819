"""The bundle is built by pure functions and checked by named checks; each check must catch
the weakening it exists for."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import BundleRejected
from closedpaw.sandbox.bundle import CHECKS, BundleInputs, HostLimits, build_config, failures
from closedpaw.sandbox.bundle.mounts import MASKED_PATHS, READONLY_PATHS
from closedpaw.sandbox.bundle.oci import HOST_RLIMITS_ANNOTATION, IdMap, merge_env
from closedpaw.sandbox.bundle.resources import MEMORY_ANNOTATION, MEMORY_BACKSTOP_BYTES
from closedpaw.sandbox.bundle.seccomp import allowed_syscalls, load_profile, to_oci
from closedpaw.sandbox.bundle.validate import check_config
from closedpaw.sandbox.spec import ResourceLimits

HOST = HostLimits(nofile_hard=20000, nproc_hard=96365)


def make(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        argv=["python3", "-c", "pass"], env=merge_env({"A": "1"}), cwd="/tmp",
        limits=ResourceLimits(cpu_cores=0.5, memory_mb=256, disk_mb=100, max_processes=20),
        rootfs=Path("/var/lib/closedpaw/rootfs/host-x"), cgroups_path="/closedpaw/cp-1/ctr",
        host=HOST, machine="x86_64")
    base.update(kw)
    return build_config(BundleInputs(**base))


def test_hardened_defaults() -> None:
    c = make()
    p = c["process"]
    assert p["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [65534]}
    assert all(v == [] for v in p["capabilities"].values()) and len(p["capabilities"]) == 5
    assert p["noNewPrivileges"] is True and p["terminal"] is False
    assert c["root"]["readonly"] is True
    assert {n["type"] for n in c["linux"]["namespaces"]} >= {"pid", "network", "ipc", "uts",
                                                             "mount"}
    assert set(MASKED_PATHS) <= set(c["linux"]["maskedPaths"])
    assert "/proc/kcore" in c["linux"]["maskedPaths"]
    assert set(READONLY_PATHS) <= set(c["linux"]["readonlyPaths"])
    assert failures(c, HOST) == []


def test_resources_from_limits() -> None:
    c = make()
    r = c["linux"]["resources"]
    backstop = (256 << 20) + MEMORY_BACKSTOP_BYTES
    assert r["memory"] == {"limit": backstop, "swap": backstop}
    assert c["annotations"][MEMORY_ANNOTATION] == str(256 << 20)
    assert r["cpu"] == {"quota": 50_000, "period": 100_000}
    assert r["pids"] == {"limit": 20}
    assert r["devices"] == [{"allow": False, "access": "rwm"}]


def test_runsc_counts_processes_with_rlimit_and_derives_host_pids_from_them() -> None:
    c = make(pids_mode="rlimit")
    assert c["linux"]["resources"]["pids"]["limit"] == 64 + 16 * 20 + 20 * 20 // 2
    nproc = [r for r in c["process"]["rlimits"] if r["type"] == "RLIMIT_NPROC"]
    assert nproc == [{"type": "RLIMIT_NPROC", "hard": 20, "soft": 20}]
    assert not [r for r in make()["process"]["rlimits"] if r["type"] == "RLIMIT_NPROC"]


def test_rlimits_never_exceed_the_host() -> None:
    c = make(host=HostLimits(nofile_hard=256, nproc_hard=10), pids_mode="rlimit")
    rl = {r["type"]: r for r in c["process"]["rlimits"]}
    assert rl["RLIMIT_NOFILE"]["hard"] == 256
    assert rl["RLIMIT_NPROC"]["hard"] == 10
    assert rl["RLIMIT_CORE"]["hard"] == 0


def test_tmp_is_a_sized_tmpfs_and_usr_is_read_only() -> None:
    mounts = {m["destination"]: m for m in make()["mounts"]}
    assert mounts["/tmp"]["type"] == "tmpfs" and "size=100m" in mounts["/tmp"]["options"]
    assert {"ro", "nosuid", "nodev"} <= set(mounts["/usr"]["options"])
    assert mounts["/usr"]["source"] == "/usr"
    assert "/etc" not in mounts and "/" not in mounts
    assert "/input" not in mounts and "/output" not in mounts


def test_input_read_only_output_writable() -> None:
    mounts = {m["destination"]: m for m in make(input_dir=Path("/s/in"),
                                                output_dir=Path("/s/out"))["mounts"]}
    assert "ro" in mounts["/input"]["options"]
    assert "rw" in mounts["/output"]["options"]


def test_environment_is_never_the_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    env = make()["process"]["env"]
    assert not any("hunter2" in e for e in env)
    keys = [e.split("=")[0] for e in env]
    assert set(keys) == {"PATH", "HOME", "LANG", "TMPDIR", "A"}
    assert len(os.environ) > len(env) or "SECRET_TOKEN" not in keys


def test_seccomp_is_default_deny_and_blocks_namespace_clones() -> None:
    s = make()["linux"]["seccomp"]
    assert s["defaultAction"] == "SCMP_ACT_ERRNO"
    assert s["architectures"] == ["SCMP_ARCH_X86_64"]
    allowed = allowed_syscalls(s)
    for bad in ("mount", "unshare", "setns", "ptrace", "bpf", "keyctl", "init_module",
                "kexec_load", "io_uring_setup", "perf_event_open", "userfaultfd", "chroot",
                "pivot_root", "process_vm_readv", "open_by_handle_at", "reboot"):
        assert bad not in allowed, bad
    clone = next(r for r in s["syscalls"] if r["names"] == ["clone"])
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    clone3 = next(r for r in s["syscalls"] if r["names"] == ["clone3"])
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def _socket_rules(s: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    out = []
    for r in s["syscalls"]:
        for name in set(r["names"]) & {"socket", "socketpair"}:
            args = {a["index"]: a for a in r.get("args", [])}
            assert r["action"] == "SCMP_ACT_ALLOW"
            assert args[0]["op"] == "SCMP_CMP_MASKED_EQ" and args[0]["value"] == 0xFFFFFFFF
            proto = args[2]["valueTwo"] if 2 in args else None
            out.append((name, args[0]["valueTwo"], proto))
    return sorted(out, key=str)


@pytest.mark.parametrize("gvisor", [False, True], ids=["runc", "runsc"])
def test_seccomp_allows_only_unix_inet_inet6_and_netlink_route_sockets(gvisor: bool) -> None:
    s = make(gvisor=gvisor)["linux"]["seccomp"]
    assert _socket_rules(s) == sorted([("socket", 1, None), ("socket", 2, None),
                                       ("socket", 10, None), ("socket", 16, 0),
                                       ("socketpair", 1, None)], key=str)


@pytest.mark.parametrize("weaken", [
    lambda r: r.update(args=[{"index": 0, "value": 0xFFFFFFFF, "valueTwo": 40,
                              "op": "SCMP_CMP_MASKED_EQ"}]),            # AF_VSOCK
    lambda r: r.update(args=[{"index": 0, "value": 0xFF, "valueTwo": 1,
                              "op": "SCMP_CMP_MASKED_EQ"}]),            # a loose mask
    lambda r: r.update(args=[{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]),  # not the family
    lambda r: r.update(args=[{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]),  # any netlink
    lambda r: r.update(names=["socketpair"], args=[{"index": 0, "value": 2,
                                                    "op": "SCMP_CMP_EQ"}]),
], ids=["vsock", "loose-mask", "other-arg", "netlink-any-protocol", "socketpair-inet"])
def test_socket_families_check_catches_weakenings(weaken: Callable[[dict[str, Any]], None]
                                                  ) -> None:
    c = copy.deepcopy(make())
    rule = next(r for r in c["linux"]["seccomp"]["syscalls"] if r["names"] == ["socket"])
    weaken(rule)
    assert "socket_families" in [n for n, _ in failures(c, HOST)]


def test_seccomp_under_gvisor_lets_clone3_reach_the_sentry() -> None:
    s = make(gvisor=True)["linux"]["seccomp"]
    assert "clone3" in allowed_syscalls(s)
    assert "mount" not in allowed_syscalls(s)


def test_seccomp_arm64_drops_legacy_calls() -> None:
    s = to_oci(load_profile(), "aarch64")
    assert s["architectures"] == ["SCMP_ARCH_AARCH64"]
    assert "open" not in allowed_syscalls(s) and "openat" in allowed_syscalls(s)
    with pytest.raises(ValueError, match="architecture"):
        to_oci(load_profile(), "mips")


def test_build_is_pure() -> None:
    assert make() == make()


Mutation = Callable[[dict[str, Any]], None]


def _mount(c: dict[str, Any], dest: str) -> dict[str, Any]:
    return next(m for m in c["mounts"] if m["destination"] == dest)


MUTATIONS: dict[str, Mutation] = {
    "user_is_nobody": lambda c: c["process"]["user"].update(uid=0),
    "capabilities_empty": lambda c: c["process"]["capabilities"]["bounding"].append(
        "CAP_SYS_ADMIN"),
    "no_new_privileges": lambda c: c["process"].update(noNewPrivileges=False),
    "root_readonly": lambda c: c["root"].update(readonly=False),
    "masked_and_readonly_paths": lambda c: c["linux"]["maskedPaths"].remove("/proc/kcore"),
    "namespaces": lambda c: c["linux"]["namespaces"].pop(1),
    "user_namespace": lambda c: c["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 0, "size": 65536}]),
    "seccomp_default_deny": lambda c: c["linux"]["seccomp"].update(
        defaultAction="SCMP_ACT_ALLOW"),
    "socket_families": lambda c: c["linux"]["seccomp"]["syscalls"][0]["names"].append(
        "socket"),
    "memory_limit": lambda c: c["linux"]["resources"]["memory"].update(swap=-1),
    "cpu_quota": lambda c: c["linux"]["resources"]["cpu"].update(quota=0),
    "process_limit": lambda c: c["linux"]["resources"]["pids"].update(limit=0),
    "tmp_is_sized_tmpfs": lambda c: _mount(c, "/tmp")["options"].remove("size=100m"),
    "mounts_are_safe": lambda c: c["mounts"].append(
        {"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "ro"]}),
    "rlimits_within_host": lambda c: c["process"]["rlimits"][0].update(hard=10**6),
    "environment_clean": lambda c: c["process"]["env"].append("SSH_AUTH_SOCK=/x"),
    "working_dir_absolute": lambda c: c["process"].update(cwd="tmp"),
}


def test_every_check_has_a_mutation() -> None:
    assert {name for name, _ in CHECKS} == set(MUTATIONS)


def _raise_leaf_memory(c: dict[str, Any]) -> None:
    m = c["linux"]["resources"]["memory"]
    m.update(limit=m["limit"] + (1 << 30), swap=m["swap"] + (1 << 30))


@pytest.mark.parametrize("weaken", [
    _raise_leaf_memory,
    lambda c: c["annotations"].pop(MEMORY_ANNOTATION),
    lambda c: c["annotations"].update({MEMORY_ANNOTATION: "lots"}),
], ids=["leaf-above-backstop", "undeclared", "declared-garbage"])
def test_memory_limit_check_catches_more_weakenings(weaken: Mutation) -> None:
    c = copy.deepcopy(make())
    weaken(c)
    assert "memory_limit" in [n for n, _ in failures(c, HOST)]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_check_catches_its_weakening(name: str) -> None:
    c = copy.deepcopy(make())
    MUTATIONS[name](c)
    failed = [n for n, _ in failures(c, HOST)]
    assert name in failed
    with pytest.raises(BundleRejected, match=name):
        check_config(c, HOST)


def test_more_weakenings_are_caught() -> None:
    c = make()
    c["linux"]["seccomp"]["syscalls"][0]["names"].append("mount")
    c["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv",
                        "options": ["rbind", "rw", "nosuid", "nodev"]})
    c["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"})
    names = {n for n, _ in failures(c, HOST)}
    assert {"seccomp_default_deny", "mounts_are_safe", "namespaces"} <= names


def test_a_malformed_config_fails_rather_than_crashes() -> None:
    assert failures({"process": {}}, HOST)


OVERLAY_ROOT = Path("/run/closedpaw/sandboxes/cp-1/rootfs")


def overlay_config(**kw: Any) -> dict[str, Any]:
    ann = {"org.closedpaw.sandbox-id": "cp-1", "org.closedpaw.rootfs": "overlay"}
    return make(rootfs=OVERLAY_ROOT, readonly_root=False, usr_source=None, annotations=ann, **kw)


def test_a_writable_root_is_accepted_only_as_the_sandboxs_own_overlay() -> None:
    assert failures(overlay_config(), HOST) == []
    weakened: list[Callable[[dict[str, Any]], object]] = [
        lambda c: c["annotations"].update({"org.closedpaw.rootfs": "bind"}),
        lambda c: c["annotations"].pop("org.closedpaw.rootfs"),
        lambda c: c["annotations"].update({"org.closedpaw.sandbox-id": "cp-2"}),
        lambda c: c["root"].update(path="/var/lib/closedpaw/images/python/rootfs"),
        lambda c: c["root"].update(path="/"),
        lambda c: c["root"].update(path="/run/closedpaw/sandboxes/cp-1/rootfs/../../cp-2/rootfs"),
    ]
    for weaken in weakened:
        c = overlay_config()
        weaken(c)
        assert [n for n, _ in failures(c, HOST)] == ["root_readonly"], c["root"]


def test_store_images_bring_their_own_usr_and_policies_add_sized_tmpfs() -> None:
    c = overlay_config(tmpfs={"/cache": 16}, code_dir=Path("/run/x/code"))
    dests = {m["destination"]: m for m in c["mounts"]}
    assert "/usr" not in dests
    assert dests["/cache"]["type"] == "tmpfs" and "size=16m" in dests["/cache"]["options"]
    assert {"nosuid", "nodev"} <= set(dests["/cache"]["options"])
    assert dests["/code"]["options"] == ["rbind", "ro", "nosuid", "nodev"]
    assert failures(c, HOST) == []


# -- the agent init and a sandbox's own user namespace (issue 15) -----------------------------
AGENT_ARGV = ["/usr/bin/python3", "-I", "-S", "/.closedpaw/cp_agent.py"]
SID = "cp-0123456789ab"
USERNS = f"/run/closedpaw/sandboxes/{SID}/userns"


def make_agent(**kw: Any) -> dict[str, Any]:
    return make(argv=AGENT_ARGV, agent_dir=Path("/opt/agent"), agent_init=True,
                annotations={"org.closedpaw.sandbox-id": SID}, **kw)


def make_userns(**kw: Any) -> dict[str, Any]:
    return make(annotations={"org.closedpaw.sandbox-id": SID},
                userns=IdMap(USERNS, 2_000_000_000, 65536), **kw)


def test_agent_init_starts_as_0_with_only_setuid_and_setgid() -> None:
    c = make_agent()
    p = c["process"]
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert p["capabilities"] == {"bounding": ["CAP_SETGID", "CAP_SETUID"],
                                 "effective": ["CAP_SETGID", "CAP_SETUID"],
                                 "permitted": ["CAP_SETGID", "CAP_SETUID"],
                                 "inheritable": [], "ambient": []}
    assert p["noNewPrivileges"] is True
    assert failures(c, HOST) == []


@pytest.mark.parametrize("weaken,check", [
    (lambda c: c["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN"),
     "capabilities_empty"),
    (lambda c: c["process"]["capabilities"]["ambient"].append("CAP_SETUID"),
     "capabilities_empty"),
    (lambda c: c["process"]["capabilities"]["inheritable"].append("CAP_SETGID"),
     "capabilities_empty"),
    # not the agent: an init claiming to be one but running something else
    (lambda c: c["process"].update(args=["/bin/sh", "-c", "id"]), "user_is_nobody"),
    (lambda c: c["process"].update(args=["/bin/sh", "-c", "id"]), "capabilities_empty"),
    # the agent's file must come from the read-only agent mount
    (lambda c: [m["options"].remove("ro") for m in c["mounts"]
                if m["destination"] == "/.closedpaw"], "user_is_nobody"),
    (lambda c: c["annotations"].pop("org.closedpaw.init"), "user_is_nobody"),
    (lambda c: c["process"]["user"].update(additionalGids=[0, 4]), "user_is_nobody"),
], ids=["extra-cap", "ambient", "inheritable", "other-argv-user", "other-argv-caps",
        "agent-mount-rw", "undeclared", "extra-groups"])
def test_agent_init_exception_is_narrow(weaken: Mutation, check: str) -> None:
    c = copy.deepcopy(make_agent())
    weaken(c)
    assert check in [n for n, _ in failures(c, HOST)]


def test_a_sandboxs_own_user_namespace() -> None:
    c = make_userns()
    lin = c["linux"]
    assert {"type": "user", "path": USERNS} in lin["namespaces"]
    m = [{"containerID": 0, "hostID": 2_000_000_000, "size": 65536}]
    assert lin["uidMappings"] == m and lin["gidMappings"] == m
    # runc would set these with prlimit() from outside the namespace: the driver applies
    # them to the runtime process instead, so they move to an annotation
    assert c["process"]["rlimits"] == []
    assert {r["type"] for r in json.loads(c["annotations"][HOST_RLIMITS_ANNOTATION])} >= {
        "RLIMIT_NOFILE", "RLIMIT_CORE"}
    assert failures(c, HOST) == []


@pytest.mark.parametrize("weaken,check", [
    (lambda c: c["linux"]["namespaces"][-1].update(path="/proc/1/ns/user"), "namespaces"),
    (lambda c: c["linux"]["namespaces"][-1].update(
        path="/run/closedpaw/sandboxes/cp-ffffffffffff/userns"), "namespaces"),
    (lambda c: c["linux"]["namespaces"].append({"type": "network", "path": USERNS}),
     "namespaces"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "namespaces"),
    (lambda c: c["linux"]["gidMappings"][0].update(hostID=0), "user_namespace"),
    (lambda c: c["linux"]["uidMappings"][0].update(hostID=1000), "user_namespace"),
    (lambda c: c["linux"]["uidMappings"][0].update(size=100), "user_namespace"),
    (lambda c: c["linux"]["uidMappings"].append(
        {"containerID": 65536, "hostID": 0, "size": 1}), "user_namespace"),
    (lambda c: c["linux"].pop("uidMappings"), "user_namespace"),
    (lambda c: c["annotations"].pop(HOST_RLIMITS_ANNOTATION), "rlimits_within_host"),
    (lambda c: c["annotations"].update({HOST_RLIMITS_ANNOTATION: json.dumps(
        [{"type": "RLIMIT_NOFILE", "soft": 10**7, "hard": 10**7},
         {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}])}), "rlimits_within_host"),
], ids=["foreign-ns", "other-sandbox-ns", "net-by-path", "twice", "gid-root", "low-uids",
        "partial", "two-ranges", "no-uid-map", "no-rlimits", "rlimit-above-host"])
def test_user_namespace_checks(weaken: Mutation, check: str) -> None:
    c = copy.deepcopy(make_userns())
    weaken(c)
    assert check in [n for n, _ in failures(c, HOST)]
