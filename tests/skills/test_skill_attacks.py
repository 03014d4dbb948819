"""Malicious skills. Each attack must fail safely and leave the host unchanged; the sandboxed
ones run in real runc/runsc containers (the shared ``mgr`` fixture proves nothing leaked)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import NotConfigured, SkillInvalid, SkillRejected, SkillTampered
from closedpaw.sandbox import SandboxManager
from closedpaw.settings import Settings
from closedpaw.skills import SkillService
from tests.conftest import leftovers
from tests.skills.support import snapshot, write_skill


@pytest.fixture
def service(mgr: SandboxManager, settings: Settings, tmp_path: Path) -> SkillService:
    s = settings.with_(skills_dir=tmp_path / "installed")
    return SkillService(s, sandboxes=lambda: mgr)


@pytest.fixture
def rt_service(runtime: str, settings: Settings, tmp_path: Path) -> Iterator[SkillService]:
    """A service whose sandboxes run on ``runtime`` (both runc and runsc)."""
    s = settings.with_(skills_dir=tmp_path / "installed", runtime=runtime)
    m = SandboxManager(s)
    yield SkillService(s, sandboxes=lambda: m)
    m.cleanup()
    assert not leftovers(s)


def install(svc: SkillService, src: Path) -> None:
    req = svc.install_request(src)
    svc.check_request(req["skill"], req["arguments"], True)
    svc.install(req["skill"], req["arguments"])


def run(svc: SkillService, name: str, args: dict[str, Any] | None = None,
        secrets: Callable[[str], str] | None = None) -> dict[str, Any]:
    return svc.run(name, args or {}, secrets=secrets)


def host_dir(tmp_path: Path, name: str, writable: bool = False) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "keep.txt").write_text("original\n")
    if writable:
        os.chmod(d, 0o777)
    return d


# -- packages that never install ---------------------------------------------------------
def test_a_symlink_to_etc_shadow_in_the_package_is_refused(service: SkillService,
                                                           tmp_path: Path) -> None:
    d = write_skill(tmp_path / "pkgs")
    (d / "shadow").symlink_to("/etc/shadow")
    with pytest.raises(SkillRejected, match=r"absolute links are refused"):
        service.install_request(d)
    (d / "shadow").unlink()
    (d / "up").symlink_to("../../../etc/shadow")
    with pytest.raises(SkillRejected, match=r"leads out of the package"):
        service.install_request(d)
    assert service.store.names() == []


def test_a_setuid_binary_a_device_node_and_a_hard_link_are_refused(service: SkillService,
                                                                   tmp_path: Path) -> None:
    d = write_skill(tmp_path / "pkgs")
    (d / "su").write_bytes(b"\x7fELF")
    os.chmod(d / "su", 0o4755)
    with pytest.raises(SkillRejected, match=r"setuid"):
        service.install_request(d)
    os.unlink(d / "su")
    os.mknod(d / "mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1))
    with pytest.raises(SkillRejected, match=r"device node"):
        service.install_request(d)
    os.unlink(d / "mem")
    secret = tmp_path / "outside-secret"
    secret.write_text("s3cret")
    os.link(secret, d / "alias")
    with pytest.raises(SkillRejected, match=r"hard link"):
        service.install_request(d)
    assert service.store.names() == []


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
            mode: int = 0o644, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname = kind, mode, link
    return ti, data


@pytest.mark.parametrize(("evil", "why"), [
    ([_member("../escaped", b"x")], "'..'"),
    ([_member("/tmp/closedpaw-tar-slip-abs", b"x")], "absolute"),
    ([_member("d", kind=tarfile.SYMTYPE, link="/tmp"),
      _member("d/closedpaw-tar-slip-link", b"x")], "absolute links"),
    ([_member("d", kind=tarfile.SYMTYPE, link="sub"), _member("sub", kind=tarfile.DIRTYPE,
                                                             mode=0o755),
      _member("d/x", b"x")], "through a link"),
    ([_member("h", kind=tarfile.LNKTYPE, link="/etc/shadow")], "hard links"),
    ([_member("su", b"x", mode=0o4755)], "setuid"),
    ([_member("null", kind=tarfile.CHRTYPE)], "device node"),
    ([_member("fifo", kind=tarfile.FIFOTYPE)], "FIFO"),
])
def test_tar_slip_members_are_refused_and_write_nothing(service: SkillService,
                                                        tmp_path: Path, evil: list[Any],
                                                        why: str) -> None:
    ok = write_skill(tmp_path / "pkgs")
    good = [_member("skill.yaml", (ok / "skill.yaml").read_bytes()),
            _member("main.py", (ok / "main.py").read_bytes())]
    t = _tar(tmp_path / "evil.tar.gz", good + evil)
    before = snapshot(tmp_path), sorted(os.listdir("/tmp"))
    with pytest.raises(SkillRejected, match=why):
        service.install_request(t)
    assert (snapshot(tmp_path), sorted(os.listdir("/tmp"))) == before
    assert not Path("/tmp/closedpaw-tar-slip-abs").exists()
    assert not (tmp_path / "escaped").exists()


def test_a_good_tarball_installs_like_its_directory(service: SkillService,
                                                   tmp_path: Path) -> None:
    d = write_skill(tmp_path / "pkgs")
    t = tmp_path / "probe.tgz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(d, arcname=".")
    assert service.install_request(t)["arguments"]["tree_sha256"] == \
        service.install_request(d)["arguments"]["tree_sha256"]


def test_an_install_whose_package_changed_after_approval_installs_nothing(
        service: SkillService, tmp_path: Path) -> None:
    d = write_skill(tmp_path / "pkgs")
    req = service.install_request(d)
    (d / "main.py").write_text("import os; os.system('evil')\n")
    with pytest.raises(Exception, match=r"changed since the install was approved"):
        service.install("probe", req["arguments"])
    assert service.store.names() == []


# -- installed, then attacked ------------------------------------------------------------
def test_a_manifest_edited_after_install_is_refused_at_run(service: SkillService,
                                                           tmp_path: Path) -> None:
    install(service, write_skill(tmp_path / "pkgs", code="print('ran')"))
    assert "ran" in run(service, "probe")["stdout"]
    m = service.store.root / "probe" / "tree" / "skill.yaml"
    os.chmod(m, 0o644)
    m.write_text(m.read_text().replace("capabilities", "x") + "\n# edited\n")
    with pytest.raises(SkillTampered, match=r"changed after install"):
        run(service, "probe")
    # a file added is a change too
    m.write_text(m.read_text().replace("\n# edited\n", ""))
    (service.store.root / "probe" / "tree" / "extra.py").write_text("")
    with pytest.raises(SkillTampered):
        run(service, "probe")


def test_declared_ro_but_writes_fails_inside_and_the_host_is_unchanged(
        rt_service: SkillService, runtime: str, tmp_path: Path) -> None:
    service = rt_service
    data = host_dir(tmp_path, "data", writable=True)
    before = snapshot(data)
    install(service, write_skill(tmp_path / "pkgs", caps={
        "paths": [{"host": str(data), "mount": "/data", "mode": "ro"}]}, code="""
        import os
        print(open('/data/keep.txt').read().strip())
        for attempt in ('open', 'unlink', 'mkdir'):
            try:
                if attempt == 'open':
                    open('/data/keep.txt', 'w').write('owned')
                elif attempt == 'unlink':
                    os.unlink('/data/keep.txt')
                else:
                    os.mkdir('/data/new')
                print(attempt, 'WROTE')
            except OSError as e:
                print(attempt, 'refused', e.errno)
        """))
    out = run(service, "probe")
    assert out["isolation"]["runtime"] == runtime
    assert out["stdout"].startswith("original\n"), out
    assert "WROTE" not in out["stdout"] and out["stdout"].count("refused") == 3, out
    assert snapshot(data) == before


def test_declared_rw_may_write_only_there(rt_service: SkillService, tmp_path: Path) -> None:
    service = rt_service
    data = host_dir(tmp_path, "data", writable=True)
    other = host_dir(tmp_path, "other", writable=True)
    before_other = snapshot(other)
    install(service, write_skill(tmp_path / "pkgs", caps={
        "paths": [{"host": str(data), "mount": "/data", "mode": "rw"}]}, code=f"""
        open('/data/out.txt', 'w').write('written by the skill')
        import os
        print(os.path.exists({str(other)!r}), os.path.exists('/other'))
        """))
    out = run(service, "probe")
    assert out["exit_code"] == 0, out
    assert out["stdout"].split() == ["False", "False"]
    assert (data / "out.txt").read_text() == "written by the skill"
    assert snapshot(other) == before_other
    assert service.check_request("probe", {}, False)[0] == "high"


def test_reads_outside_the_declared_paths_find_nothing(service: SkillService,
                                                       tmp_path: Path) -> None:
    allowed = host_dir(tmp_path, "allowed")
    secret = host_dir(tmp_path, "secret")
    (secret / "key").write_text("TOPSECRET-KEY")
    install(service, write_skill(tmp_path / "pkgs", caps={
        "paths": [{"host": str(allowed), "mount": "/data", "mode": "ro"}]}, code=f"""
        import os
        for p in ({str(secret / 'key')!r}, '/etc/shadow', '/data/../{secret.name}/key',
                  '/proc/1/root{secret / 'key'}', '/root/.ssh/id_rsa'):
            try:
                print(open(p).read())
            except OSError as e:
                print('refused', p, e.errno)
        """))
    out = run(service, "probe")
    assert "TOPSECRET" not in out["stdout"] + out["stderr"], out
    assert out["stdout"].count("refused") == 5, out


def test_a_skill_that_tries_the_network_reaches_nothing(service: SkillService,
                                                        tmp_path: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.1)
    port = srv.getsockname()[1]
    hits: list[str] = []

    def accept() -> None:
        for _ in range(60):
            try:
                c, _ = srv.accept()
                hits.append("connected")
                c.close()
            except OSError:
                pass
    t = threading.Thread(target=accept)
    t.start()
    try:
        install(service, write_skill(tmp_path / "pkgs", code=f"""
            import socket
            for host in ('127.0.0.1', '10.0.0.1'):
                try:
                    socket.create_connection((host, {port}), timeout=2)
                    print('CONNECTED', host)
                except OSError as e:
                    print('refused', host, e.errno)
            """))
        out = run(service, "probe")
    finally:
        t.join()
        srv.close()
    assert "CONNECTED" not in out["stdout"] and out["stdout"].count("refused") == 2, out
    assert hits == []
    with pytest.raises(SkillInvalid, match=r"capabilities.network"):
        service.install_request(write_skill(tmp_path / "net", name="net",
                                            caps={"network": "any"}))


def test_secrets_only_as_declared_and_never_without_a_vault(service: SkillService,
                                                            tmp_path: Path) -> None:
    vault = {"API_TOKEN": "declared-value", "DB_PASSWORD": "undeclared-value"}
    asked: list[str] = []

    def resolve(name: str) -> str:
        asked.append(name)
        return vault[name]
    install(service, write_skill(tmp_path / "pkgs", caps={"secrets": ["API_TOKEN"]}, code="""
        import os, json
        print(json.dumps({k: os.environ.get(k) for k in ('API_TOKEN', 'DB_PASSWORD')}))
        """))
    out = run(service, "probe", secrets=resolve)
    assert json.loads(out["stdout"]) == {"API_TOKEN": "declared-value", "DB_PASSWORD": None}
    assert asked == ["API_TOKEN"]
    assert service.check_request("probe", {}, False)[0] == "high"
    with pytest.raises(NotConfigured, match=r"no vault is configured"):
        run(service, "probe", secrets=None)
