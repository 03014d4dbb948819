"""Fixtures of the gate's integration tests: a throwaway PostgreSQL cluster (session), a
database URL per test (SQLite file or a fresh PostgreSQL database), gate settings in a temp
data directory, and a real uvicorn server on 127.0.0.1 on a free port."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.api import create_app
from closedpaw.gate import Gate
from closedpaw.sandbox.drivers.fake import FakeDriver, Handler
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.settings import Settings
from tests.conftest import TEST_CGROUP, leftovers

PG_HINT = "apt-get install postgresql (make test installs it)"


# -- PostgreSQL ---------------------------------------------------------------------------
@dataclass
class PgCluster:
    sockdir: Path
    port: int

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@/{db}?host={self.sockdir}&port={self.port}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.sockdir), port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """initdb into a temp dir owned by 'postgres', listen on a unix socket only (no TCP at
    all), stop and remove it at the end of the session."""
    if os.geteuid() != 0:
        pytest.fail("the PostgreSQL tests need root (to run the cluster as 'postgres'): run "
                    "'make test' as root", pytrace=False)
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins or shutil.which("runuser") is None:
        pytest.fail(f"PostgreSQL is not installed: {PG_HINT}", pytrace=False)
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="closedpaw-pg-"))
    shutil.chown(base, "postgres", "postgres")
    data = base / "data"
    port = free_port()

    def as_pg(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                              text=True, check=False, timeout=120)
    try:
        r = as_pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        assert r.returncode == 0, f"initdb failed: {r.stderr}"
        r = as_pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                  "-o", f"-p {port} -k {base} -c listen_addresses='' -c fsync=off", "start")
        assert r.returncode == 0, f"pg_ctl start failed: {r.stderr} {(base / 'log').read_text()}"
        yield PgCluster(base, port)
    finally:
        as_pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'closedpaw.db'}"
        return
    pg: PgCluster = request.getfixturevalue("pg_cluster")
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.admin(f"CREATE DATABASE {name}")
    try:
        yield pg.url(name)
    finally:
        pg.admin(f"DROP DATABASE {name} WITH (FORCE)")


# -- the gate -----------------------------------------------------------------------------
def gate_settings(tmp_path: Path, **more: Any) -> Settings:
    return Settings.of(data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                       cgroup_parent=TEST_CGROUP, **more)


def fake_manager(settings: Settings, handler: Handler | None = None) -> SandboxManager:
    return SandboxManager(settings, driver=FakeDriver(handler) if handler else FakeDriver())


def python_handler(argv: Any, stdin: bytes) -> tuple[int, bytes, bytes]:
    """FakeDriver handler: 'python3 -c print(6*7)' prints 42; anything else is echoed."""
    if list(argv[:2]) == ["python3", "-c"]:
        return 0, b"42\n" if argv[2] == "print(6*7)" else b"", b""
    return 0, " ".join(argv).encode() + b"\n", b""


@pytest.fixture
def make_orch(tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    """Build gates (a FakeDriver sandbox unless ``manager`` is given); all closed at
    the end, and nothing may be left behind."""
    made: list[Gate] = []

    def make(settings: Settings | None = None, *, manager: SandboxManager | None = None,
             start: bool = True, **more: Any) -> Gate:
        s = settings or gate_settings(tmp_path, **more)
        o = Gate(s, manager=manager or fake_manager(s, python_handler))
        made.append(o)
        if start:
            o.start()
        return o

    yield make
    for o in made:
        o.close()
    assert not [x for x in leftovers(gate_settings(tmp_path)) if "process" not in x]


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- a live server ------------------------------------------------------------------------
@dataclass
class Live:
    url: str
    settings: Settings
    token: str
    app: Any

    def client(self, token: str | None = None) -> httpx.Client:
        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)


@contextlib.contextmanager
def live_server(settings: Settings, gate: Gate | None = None) -> Iterator[Live]:
    """create_app(settings) under a real uvicorn on 127.0.0.1, on a free port."""
    import uvicorn

    app = create_app(settings, gate=gate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none",
                            http="h11", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        wait_for(lambda: server.started or not t.is_alive(), "the server to start")
        assert server.started, "the server did not start (see the log above)"
        token = settings.token_file.read_text().strip()
        yield Live(f"http://127.0.0.1:{port}", settings, token, app)
    finally:
        server.should_exit = True
        t.join(timeout=30)
        sock.close()
        assert not t.is_alive(), "the server did not stop"
