"""The web UI in a real browser: Debian's chromium driven by Playwright (``playwright.sync_api``
with ``executable_path``; Playwright's own browser download is not used), against the real
API app under uvicorn on 127.0.0.1, a scripted model server speaking the OpenAI wire protocol
(tests/provider_servers.py) and real runsc sandboxes.

Each test that fails leaves a screenshot of every page it opened in
``test-results/browser/<test>-<n>.png``."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.api import create_app
from closedpaw.gate import Gate
from closedpaw.providers import Gateway, OpenAIConfig
from closedpaw.settings import Settings
from tests.conftest import HIGH_RULES, TEST_CGROUP, TEST_STATE, require_runtime
from tests.integration.conftest import wait_for
from tests.provider_servers import ProviderServer

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "browser"
RUNTIME = "runsc"


#: set on window by the init script: every CSP violation the page saw
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI,
                            sample: e.sample});
});
"""


@dataclass
class Rig:
    url: str
    token: str
    model: ProviderServer
    gate: Gate
    settings: Settings
    app: Any
    pages: list[Any] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, trust_env=False,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def link(self) -> str:
        from closedpaw.web import issue_login_link

        got = issue_login_link(self.app, self.url)
        assert got is not None
        return got


@contextlib.contextmanager
def running(tmp_path: Path, **over: Any) -> Iterator[Rig]:
    import uvicorn

    from closedpaw.api.guard import uvicorn_config

    require_runtime(RUNTIME)
    rules = over.pop("rules", HIGH_RULES)
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE,
                    cgroup_parent=TEST_CGROUP, runtime=RUNTIME, **over)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    (s.data_dir / "rules.yaml").write_text(rules)
    model = ProviderServer("openai")
    gate = Gate(s)
    gw = Gateway([OpenAIConfig(name="scripted", base_url=f"{model.url}/v1",
                               model="scripted-model", timeout_s=30)], default="scripted")
    app = create_app(s, gate=gate, providers=gw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, s, log_level="warning",
                                           timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        wait_for(lambda: server.started or not t.is_alive(), "the server to start")
        assert server.started
        yield Rig(f"http://127.0.0.1:{port}", s.token_file.read_text().strip(), model, gate,
                  s, app)
    except BaseException:
        _shoot_and_close(os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0])
        raise
    finally:
        _shoot_and_close(None)   # browsers leave before the server stops (no open streams)
        server.should_exit = True
        t.join(timeout=30)
        sock.close()
        gate.close()
        gw.close()
        model.close()
        assert not t.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium per test module (module, not session: while Playwright's sync API runs
    it holds an event loop in this thread, and later tests call asyncio.run)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: 'apt-get install chromium' (make test does this)",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: 'pip install -e .[dev]' (make test does this)",
                    pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.stash[_FAILED] = rep.failed
    return rep


_FAILED = pytest.StashKey[bool]()


#: the browser contexts of the running test (new_page adds, _shoot_and_close empties)
_OPEN: list[Any] = []


def _shoot_and_close(test: str | None) -> None:
    """With a test name (it failed): a screenshot of every open page first. Then close."""
    if test is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test.rsplit("::", 1)[-1])
        n = 0
        for ctx in _OPEN:
            for pg in ctx.pages:
                with contextlib.suppress(Exception):
                    pg.screenshot(path=str(SHOTS / f"{name}-{n}.png"), full_page=True)
                    n += 1
    for ctx in _OPEN:
        with contextlib.suppress(Exception):
            ctx.close()
    _OPEN.clear()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """new_page(width=1280, height=720): a page in a fresh context (its own cookies), with
    the CSP-violation watcher. A failure inside running() screenshots every open page
    before the server stops; running() closes them all when it ends (so no event stream is
    open at shutdown); whatever is left is shot (on failure) and closed here."""
    def make(width: int = 1280, height: int = 720, **kw: Any) -> Any:
        ctx = browser.new_context(viewport={"width": width, "height": height}, **kw)
        ctx.add_init_script(WATCH)
        _OPEN.append(ctx)
        return ctx.new_page()

    yield make
    # pages still open here (a test that failed outside running()): shots, then close
    _shoot_and_close(request.node.name if request.node.stash.get(_FAILED, False) else None)


def login(page: Any, rig: Rig, token: str | None = None) -> None:
    """Log in through the login page's token field."""
    page.goto(f"{rig.url}/login")
    page.fill("#token", token or rig.token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/chat$"))
    page.wait_for_selector("#app[data-ready='1']")


def violations(page: Any) -> list[Any]:
    return page.evaluate("window.__violations")  # type: ignore[no-any-return]
