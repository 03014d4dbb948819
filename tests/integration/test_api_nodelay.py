"""The API server's accepted connections have TCP_NODELAY (asyncio sets it only on sockets
made with proto=IPPROTO_TCP, and uvicorn's have proto 0): without it a response written as
headers then body waits for the client's delayed ACK, ~40 ms on every request. Checked on
the server's own socket, found among this process's descriptors (the server runs in a
thread here), not by timing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from closedpaw.settings import Settings
from tests.integration.conftest import live_server


def _server_side(port: int, peer_port: int) -> socket.socket | None:
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            if s.family == socket.AF_INET and s.getsockname()[1] == port \
                    and s.getpeername()[1] == peer_port:
                return s
        except OSError:
            pass
        s.close()
    return None


def test_accepted_connections_have_tcp_nodelay(tmp_path: Path) -> None:
    s = Settings.of(data_dir=tmp_path / "data", state_dir=tmp_path / "state")
    with live_server(s) as live:
        port = int(live.url.rsplit(":", 1)[1])
        with live.client() as c:
            assert c.get("/api/health").status_code == 200
            # the client's connection (kept alive) and its server side
            mine = [x for x in _client_ports(port)]
            assert mine, "no client connection found"
            found = [_server_side(port, p) for p in mine]
            srv = [x for x in found if x is not None]
            assert srv, "the server's side of the connection was not found"
            try:
                for x in srv:
                    assert x.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            finally:
                for x in srv:
                    x.close()


def _client_ports(port: int) -> list[int]:
    """Local ports of this process's connections to ``port``."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            if s.family == socket.AF_INET and s.type == socket.SOCK_STREAM:
                peer = s.getpeername()
                if peer[1] == port:
                    out.append(s.getsockname()[1])
        except OSError:
            pass
        finally:
            s.close()
    return out
