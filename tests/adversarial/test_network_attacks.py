"""Network attacks. Sandboxes get a private network namespace with loopback only, so the
host's loopback services are out of reach. Only loopback traffic is ever generated here: no
test sends anything to a non-loopback address, not even to prove that it fails."""

from __future__ import annotations

import secrets
import select
import socket
from collections.abc import Iterator

import pytest
from adversarial_support import run_probe

from closedpaw.sandbox.lifecycle.manager import SandboxManager


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def udp_listener() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A unix socket in the abstract namespace, which is scoped by network namespace."""
    name = f"closedpaw-adv-{secrets.token_hex(8)}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(4)
    s.setblocking(False)
    yield s, name
    s.close()


def _no_pending(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0.5)
    return not readable


def test_host_loopback_services_unreachable(
        mgr: SandboxManager, runtime: str, tcp_listener: socket.socket,
        udp_listener: socket.socket, abstract_listener: tuple[socket.socket, str]) -> None:
    tcp_port = tcp_listener.getsockname()[1]
    udp_port = udp_listener.getsockname()[1]
    abstract_sock, abstract_name = abstract_listener
    body = f"""
    import socket
    def connect(family, addr):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(addr)
            return "connected"
        finally:
            s.close()
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            return s.sendto(b"closedpaw-udp-probe", ("127.0.0.1", {udp_port}))
        finally:
            s.close()
    probe("tcp4", lambda: connect(socket.AF_INET, ("127.0.0.1", {tcp_port})))
    probe("tcp6", lambda: connect(socket.AF_INET6, ("::1", {tcp_port})))
    probe("localhost", lambda: connect(socket.AF_INET, ("localhost", {tcp_port})))
    probe("abstract", lambda: connect(socket.AF_UNIX, "\\0{abstract_name}"))
    probe("udp", udp)
    def own_loopback():
        # Positive control: loopback itself works, so the refusals above are isolation.
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", {tcp_port}))
        srv.listen(1)
        try:
            return connect(socket.AF_INET, ("127.0.0.1", {tcp_port}))
        finally:
            srv.close()
    probe("own_loopback", own_loopback)
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    assert f["own_loopback"] == {"ok": True, "value": "connected"}, f["own_loopback"]
    for name in ("tcp4", "localhost", "abstract"):
        assert f[name]["ok"] is False, f
        assert f[name]["errno"] == "ECONNREFUSED", f
    # ::1 has no listener either (or IPv6 is unavailable): never a connection.
    assert f["tcp6"]["ok"] is False
    assert f["tcp6"]["errno"] in ("ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH",
                                  "EAFNOSUPPORT"), f
    assert _no_pending(tcp_listener), "the host's TCP listener received a connection"
    assert _no_pending(abstract_sock), "the host's abstract unix socket received a connection"
    with pytest.raises(BlockingIOError):
        udp_listener.recvfrom(4096)


def test_only_loopback_interface_and_no_routes(mgr: SandboxManager, runtime: str) -> None:
    body = """
    import socket
    def read(path):
        with open(path) as f:
            return f.read()
    probe("ifs", lambda: [n for _, n in socket.if_nameindex()])
    probe("route", lambda: read("/proc/net/route"))
    probe("route6", lambda: read("/proc/net/ipv6_route"))
    probe("inet6", lambda: read("/proc/net/if_inet6"))
    probe("dev", lambda: read("/proc/net/dev"))
    probe("sys", lambda: sorted(os.listdir("/sys/class/net")))
    emit()
    """
    f = run_probe(mgr, runtime, body, timeout_s=30)
    host_ifs = {n for _, n in socket.if_nameindex()}

    assert f["ifs"]["ok"] and f["ifs"]["value"] == ["lo"], f["ifs"]
    # Sanity: the host has interfaces the sandbox must not see.
    assert host_ifs - {"lo"}, host_ifs

    assert f["route"]["ok"], f["route"]
    v4 = [ln.split() for ln in f["route"]["value"].splitlines()[1:] if ln.strip()]
    assert not [r for r in v4 if r[1] == "00000000"], f"an IPv4 default route: {v4}"
    assert not [r for r in v4 if r[0] != "lo"], f"IPv4 routes through other devices: {v4}"

    # IPv6: only loopback entries (Linux keeps a reject entry for ::/0 on lo).
    if f["route6"]["ok"]:
        v6 = [ln.split() for ln in f["route6"]["value"].splitlines() if ln.strip()]
        assert all(r[-1] == "lo" for r in v6), v6
    if f["inet6"]["ok"]:
        devs = {ln.split()[-1] for ln in f["inet6"]["value"].splitlines() if ln.strip()}
        assert devs <= {"lo"}, devs

    assert f["dev"]["ok"], f["dev"]
    devs = {ln.split(":")[0].strip() for ln in f["dev"]["value"].splitlines()[2:] if ":" in ln}
    assert devs == {"lo"}, devs

    if f["sys"]["ok"]:
        assert f["sys"]["value"] == ["lo"], f["sys"]
