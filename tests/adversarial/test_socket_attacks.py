"""Socket families: a sandbox may create AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE sockets
and nothing else. AF_VSOCK is not namespaced under runc (a sandbox could bind the VM's vsock
ports or reach the hypervisor), and AF_PACKET, AF_ALG, AF_KEY, uevent netlink and the rest
are kernel surface no sandbox needs. Tried on both runtimes, with each socket type, with
garbage in the upper half of the family argument, and through socketpair."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from adversarial_support import findings, probe_argv, spec

from closedpaw.sandbox.lifecycle.manager import SandboxManager

ALLOWED = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
REFUSED = {"AF_VSOCK": 40, "AF_PACKET": 17, "AF_ALG": 38, "AF_KEY": 15, "AF_BLUETOOTH": 31,
           "AF_APPLETALK": 5, "AF_X25": 9, "AF_AX25": 3, "AF_IPX": 4, "AF_TIPC": 30,
           "AF_RDS": 21, "AF_CAN": 29, "AF_LLC": 26, "AF_PPPOX": 24, "AF_XDP": 44,
           "AF_QIPCRTR": 42, "AF_SMC": 43, "AF_MCTP": 45, "AF_NFC": 39, "AF_KCM": 41,
           "AF_IB": 27, "AF_PHONET": 35, "AF_IEEE802154": 36, "AF_CAIF": 37, "AF_ISDN": 34}
DENIED = ("EPERM", "EAFNOSUPPORT")

BODY = f"""
import socket
ALLOWED = {ALLOWED!r}
REFUSED = {REFUSED!r}
for name, fam in {{**ALLOWED, **REFUSED}}.items():
    for t in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_RAW):
        probe(f"{{name}}/{{int(t)}}", lambda: raw(libc.socket, fam, int(t), 0) and None)
    probe(f"pair/{{name}}", lambda: socket.socketpair(fam, socket.SOCK_STREAM) and None)
# the family in the low 32 bits, garbage above: the filter must still see AF_VSOCK
libc.syscall.restype = ctypes.c_long
probe("vsock-high-bits", lambda: raw(libc.syscall, 41, ctypes.c_long((1 << 32) | 40), 1, 0))
def vsock_bind():
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.bind((socket.VMADDR_CID_ANY, 5555))
    s.listen()
probe("vsock-listen", vsock_bind)
for proto, pname in ((0, "route"), (15, "uevent"), (9, "audit"), (4, "sock_diag"),
                     (12, "netfilter"), (16, "generic")):
    probe(f"netlink-{{pname}}", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                     proto).close())
def uevent():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
    s.bind((0, 1))
probe("uevent-bind", uevent)
# what programs do need still works: a loopback TCP round trip, names, interfaces
def tcp():
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b"ping")
    return a.recv(4).decode()
probe("tcp", tcp)
probe("tcp6", lambda: socket.socket(socket.AF_INET6).close())
probe("getaddrinfo", lambda: sorted({{i[4][0] for i in socket.getaddrinfo("localhost", 80)}}))
probe("if_nameindex", lambda: sorted(n for _, n in socket.if_nameindex()))
def unix():
    a, b = socket.socketpair(socket.AF_UNIX)
    a.send(b"x")
    return b.recv(1).decode()
probe("unix", unix)
emit()
"""


def test_only_unix_inet_inet6_and_netlink_route_sockets(mgr: SandboxManager,
                                                        runtime: str) -> None:
    f = findings(mgr.run(probe_argv(BODY), spec(timeout_s=60), runtime=runtime))
    for name in REFUSED:
        for t in (1, 2, 5, 3):
            got = f[f"{name}/{t}"]
            assert got["ok"] is False and got["errno"] in DENIED, (runtime, name, t, got)
        assert f[f"pair/{name}"]["errno"] in DENIED, (runtime, name, f[f"pair/{name}"])
    for name in ALLOWED:
        assert f[f"{name}/1"]["ok"] is True, (runtime, name, f[f"{name}/1"])
        assert f[f"{name}/2"]["ok"] is True, (runtime, name, f[f"{name}/2"])
    for name in ("AF_INET", "AF_INET6"):   # only a socketpair of AF_UNIX
        assert f[f"pair/{name}"]["errno"] in (*DENIED, "EOPNOTSUPP"), f[f"pair/{name}"]
    assert f["pair/AF_UNIX"]["ok"] is True
    assert f["vsock-high-bits"]["errno"] in DENIED, f["vsock-high-bits"]
    assert f["vsock-listen"]["errno"] in DENIED, f["vsock-listen"]
    for pname in ("uevent", "audit", "sock_diag", "netfilter", "generic"):
        assert f[f"netlink-{pname}"]["errno"] in DENIED, (runtime, pname, f)
    assert f["uevent-bind"]["errno"] in DENIED, f["uevent-bind"]
    assert f["netlink-route"]["ok"] is True, f["netlink-route"]
    assert f["tcp"]["value"] == "ping", f["tcp"]
    assert f["tcp6"]["ok"] is True
    assert "127.0.0.1" in f["getaddrinfo"]["value"], f["getaddrinfo"]
    assert f["if_nameindex"]["value"] == ["lo"], f["if_nameindex"]
    assert f["unix"]["value"] == "x", f["unix"]


NODE = """
const net = require('net'), os = require('os'), dns = require('dns');
const out = {ifaces: Object.keys(os.networkInterfaces())};
const srv = net.createServer(c => c.end('pong')).listen(0, '127.0.0.1', () => {
  dns.lookup('localhost', (err, addr) => {
    out.lookup = err ? String(err) : addr;
    net.connect(srv.address().port, 'localhost', function () {
      this.on('data', d => { out.tcp = String(d); console.log(JSON.stringify(out));
                             srv.close(); });
    }).on('error', e => { out.tcp = String(e); console.log(JSON.stringify(out)); srv.close(); });
  });
});
"""


def test_node_networking_on_loopback_still_works(mgr: SandboxManager, runtime: str) -> None:
    if not os.path.exists("/usr/bin/node"):
        pytest.fail(f"node is needed for this test: apt-get install nodejs "
                    f"(found {shutil.which('node')})", pytrace=False)
    r = mgr.run(["node", "-e", NODE], spec(timeout_s=60, memory_mb=256), runtime=runtime)
    assert r.exit_code == 0, r.stderr_text
    out = json.loads(r.stdout_text.strip().splitlines()[-1])
    assert out["tcp"] == "pong" and out["ifaces"] == ["lo"], out
    assert out["lookup"] in ("127.0.0.1", "::1"), out
