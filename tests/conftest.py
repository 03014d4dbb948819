"""Shared fixtures. Runtime tests use real runc and runsc as root; when either is missing they
fail (never skip) with a message saying how to get it. Every test that creates sandboxes gets
a manager whose teardown proves nothing was left behind: no containers, cgroups, mounts,
state directories or runtime processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.errors import ImageError
from closedpaw.sandbox.host import inventory
from closedpaw.sandbox.images.debootstrap import RECIPES, build_image
from closedpaw.sandbox.images.store import Image, ImageStore
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.settings import Settings

RUNTIMES = inventory.RUNTIMES
TEST_STATE = Path(f"/run/closedpaw-test-{os.getpid()}")
TEST_CGROUP = f"closedpaw-test-{os.getpid()}"
#: rules under which code_execution whose code holds DANGER is high (needs an approval), a
#: high action confined to a sandbox: its requester may approve it (a host action, such as a
#: file_write, needs an approver or admin)
HIGH_RULES = """version: 1
rules:
  - action_type: code_execution
    when: {code: {matches: "(?s).*DANGER.*"}}
    level: high
    reason: the test marks this code high
"""
DATA_DIR = Path(os.environ.get("CLOSEDPAW_TEST_DATA_DIR", "/var/lib/closedpaw"))


def python_stdout(code: str) -> str:
    """What ``code`` prints, run by this interpreter in a fresh process (stripped): for checks
    of what a path imports, which only a new process can tell."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def require_runtime(name: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"this test needs root to run {name} sandboxes: run 'make test' as root "
                    "(sudo make test)", pytrace=False)
    if shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.fail(f"{name} is not installed: 'apt-get install runsc runc' (make test does "
                    "this)", pytrace=False)


def sandbox_settings() -> Settings:
    return Settings.of(state_dir=TEST_STATE, data_dir=DATA_DIR, cgroup_parent=TEST_CGROUP)


def image_staging_leftovers(store: Path) -> list[str]:
    """Build or import directories left in the store. Each is flock'ed by its owner while it
    lives, so one counts only when its lock is free (another test run may be importing), and
    only while nobody holds the store lock (older versions staged under that lock alone)."""
    found = []
    try:
        names = [n for n in os.listdir(store) if n.startswith(".tmp-")]
        lock = os.open(store / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return []
    for n in names:
        try:
            fd = os.open(store / n, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
        found.append(f"image staging dir {store / n}")
    os.close(lock)
    return found


def leftovers(settings: Settings) -> list[str]:
    """Everything a finished manager must not leave behind (the host inventory gc uses, plus
    image staging dirs nobody is building in)."""
    return inventory.take(settings).lines() + image_staging_leftovers(settings.images)


def require_image_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("building images needs root: run 'make test' as root", pytrace=False)
    if shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.fail("debootstrap is not installed: 'apt-get install debootstrap' (make test "
                    "does this)", pytrace=False)


@pytest.fixture(scope="session")
def built_images() -> dict[str, Image]:
    """The python, node, shell and multi images, built for real with debootstrap once and
    cached in the store between runs (a fresh machine builds them here, ~1-2 minutes).
    A test may rebuild one (the CLI build test does): use ``ImageStore.get`` for its current
    root filesystem rather than the ``rootfs`` recorded here."""
    require_image_tools()
    store = ImageStore(sandbox_settings().images)
    out: dict[str, Image] = {}
    for name, packages in RECIPES.items():
        try:
            img = store.get(name)
            if (img.source.get("type") != "debootstrap"
                    or tuple(img.source.get("packages", ())) != packages):
                raise ImageError("stale")
        except ImageError:
            img = build_image(store, name)
        out[name] = img
    return out


def settled_leftovers(settings: Settings, timeout_s: float = 20.0) -> list[str]:
    """:func:`leftovers` once teardown has had time to finish: ``closedpaw run`` hands it to a
    detached child and exits. Also fails on errors that child logged."""
    import time

    deadline = time.monotonic() + timeout_s
    while (left := leftovers(settings)) and time.monotonic() < deadline:
        time.sleep(0.1)
    errors = settings.state_dir / "cleanup-errors.log"
    if errors.exists():
        left.append(f"cleanup errors: {errors.read_text()}")
    return left


@pytest.fixture
def settings() -> Settings:
    return sandbox_settings()


@pytest.fixture
def mgr(settings: Settings, request: pytest.FixtureRequest) -> Iterator[SandboxManager]:
    """A manager on real runtimes; fails the test if anything is left after cleanup."""
    m = SandboxManager(settings)
    yield m
    m.cleanup()
    left = leftovers(settings)
    assert not left, f"{request.node.nodeid} leaked: {left}"
    assert not m.reaper.errors, m.reaper.errors


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_runtime(name)
    return name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole suite must leave nothing behind: check, then remove the test's roots."""
    left = leftovers(sandbox_settings()) if os.geteuid() == 0 else []
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"LEAK: the test suite left behind: {left}", red=True)
    if TEST_STATE.exists():
        shutil.rmtree(TEST_STATE, ignore_errors=True)
    for base in inventory.cgroup_bases(TEST_CGROUP):
        with contextlib.suppress(OSError):
            base.rmdir()
