"""The web UI in Chromium, side by side with its floors.

    sudo .venv/bin/python benchmarks/web.py [--runs N] [--runtime runsc|runc] [--json PATH]

* ``first render`` of the Chat and Approvals pages: from ``page.goto`` to the page's script
  marking ``#app[data-ready]`` (its API calls answered and drawn), cold (a new browser
  context: empty cache, new connections) and warm (the same context again: static files
  revalidated by ETag). Floor: the login page (HTML + CSS, no script, no API call) in the
  same browser, cold and warm.
* ``approve``: a high ``code_execution`` action waits; from the click on Approve on the
  Approvals page to its card showing ``completed`` (the /api/events update). Beside it, the
  same through the API: ``POST /approve`` to the ``completed`` event on an open
  ``/api/events`` stream. Both include the sandbox run (``--runtime``); the difference is the
  page's cost. Times are taken in Python around Playwright calls (each adds a round trip to
  the browser, about a millisecond).

Writes JSON to benchmarks/results/web.json.
"""

# ruff: noqa: E402 (the imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx
from _common import REPO, machine_info, summary

from closedpaw.api import create_app
from closedpaw.api.guard import uvicorn_config
from closedpaw.gate import Gate
from closedpaw.providers import Gateway, OpenAIConfig
from closedpaw.settings import Settings
from tests.conftest import HIGH_RULES
from tests.provider_servers import ProviderServer

DEFAULT_JSON = REPO / "benchmarks" / "results" / "web.json"
CGROUP = "closedpaw-bench-web"
CODE = "print('DANGER', 6*7)"


class Server:
    def __init__(self, tmp: Path, runtime: str) -> None:
        import uvicorn

        self.s = Settings.of(data_dir=tmp / "data", state_dir=tmp / "state",
                             cgroup_parent=CGROUP, runtime=runtime)
        self.s.data_dir.mkdir(parents=True)
        (self.s.data_dir / "rules.yaml").write_text(HIGH_RULES)
        self.model = ProviderServer("openai")
        self.gate = Gate(self.s)
        self.gw = Gateway([OpenAIConfig(name="scripted", base_url=f"{self.model.url}/v1",
                                        model="scripted-model")], default="scripted")
        self.app = create_app(self.s, gate=self.gate, providers=self.gw)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, self.s, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.t = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                  daemon=True)
        self.t.start()
        while not self.server.started:
            if not self.t.is_alive():
                raise SystemExit("the server did not start")
            time.sleep(0.02)
        self.token = self.s.token_file.read_text().strip()
        self.api = httpx.Client(base_url=self.url, trust_env=False, timeout=120,
                                headers={"Authorization": f"Bearer {self.token}"})

    def submit(self) -> dict[str, Any]:
        r = self.api.post("/api/actions", json={"action_type": "code_execution", "parameters":
                                                {"language": "python", "code": CODE}})
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def close(self) -> None:
        self.api.close()
        self.server.should_exit = True
        self.t.join(timeout=30)
        self.sock.close()
        self.gate.close()
        self.gw.close()
        self.model.close()


def _login(ctx: Any, srv: Server) -> None:
    page = ctx.new_page()
    page.goto(f"{srv.url}/login")
    page.fill("#token", srv.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#app[data-ready='1']")
    page.close()


def _render(ctx: Any, url: str, ready: str | None) -> float:
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    if ready:
        page.wait_for_selector(ready)
    ms = (time.perf_counter() - t0) * 1000
    page.close()
    return ms


def first_render(browser: Any, srv: Server, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path, ready in (("login (floor)", "/login", None),
                              ("chat", "/chat", "#app[data-ready='1']"),
                              ("approvals", "/approvals", "#app[data-ready='1']")):
        cold, warm = [], []
        for _ in range(runs):
            # a new context holding only the session cookie: empty cache, no connection
            ctx = browser.new_context()
            if path != "/login":
                _login(ctx, srv)
            fresh = browser.new_context(storage_state=ctx.storage_state())
            ctx.close()
            cold.append(_render(fresh, srv.url + path, ready))
            warm.append(_render(fresh, srv.url + path, ready))
            fresh.close()
        out[name] = {"cold": summary(cold), "warm": summary(warm)}
    return out


def approve(browser: Any, srv: Server, runs: int) -> dict[str, Any]:
    ctx = browser.new_context()
    _login(ctx, srv)
    page = ctx.new_page()
    page.goto(srv.url + "/approvals")
    page.wait_for_selector("#app[data-ready='1']")
    ui, api = [], []
    for _ in range(runs):
        a = srv.submit()
        card = page.locator(f".action[data-id='{a['action_id']}']")
        card.wait_for()
        button = card.get_by_role("button", name="Approve action " + a["action_id"])
        t0 = time.perf_counter()
        button.click()
        page.wait_for_function(
            f"() => document.querySelector(\".action[data-id='{a['action_id']}']\")"
            ".dataset.status === 'completed'", timeout=120_000)
        ui.append((time.perf_counter() - t0) * 1000)
        # the same through the API, with an event stream open before
        b = srv.submit()
        with srv.api.stream("GET", "/api/events", timeout=120) as ev:
            lines = ev.iter_lines()
            next(lines)   # the stream is open
            t0 = time.perf_counter()
            srv.api.post(f"/api/actions/{b['action_id']}/approve",
                         json={"params_sha256": b["params_sha256"]}).raise_for_status()
            for line in lines:
                if line.startswith("data: "):
                    d = json.loads(line[6:])
                    if d["action_id"] == b["action_id"] and d["status"] == "completed":
                        break
            api.append((time.perf_counter() - t0) * 1000)
    ctx.close()
    u, f = summary(ui), summary(api)
    return {"page": u, "api": f, "overhead_median_ms": round(u["median_ms"] - f["median_ms"], 2),
            "ratio": round(u["median_ms"] / f["median_ms"], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--runtime", default="runsc", choices=["runsc", "runc"])
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    import logging

    from playwright.sync_api import sync_playwright

    for name in ("httpx", "mcp", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-web-"))
    tmp.chmod(0o711)   # searchable: sandboxes get their own user namespace, as in use
    out: dict[str, Any] = {"machine": machine_info(), "runtime": args.runtime}
    srv = Server(tmp, args.runtime)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox"])
            try:
                r = out["first_render"] = first_render(browser, srv, args.runs)
                floor = r["login (floor)"]
                for name, v in r.items():
                    print(f"first render {name:<14} cold median {v['cold']['median_ms']:7.1f} ms"
                          f" (floor {floor['cold']['median_ms']:6.1f}, "
                          f"x{v['cold']['median_ms'] / floor['cold']['median_ms']:.2f})   "
                          f"warm {v['warm']['median_ms']:7.1f} ms (floor "
                          f"{floor['warm']['median_ms']:6.1f}, "
                          f"x{v['warm']['median_ms'] / floor['warm']['median_ms']:.2f})")
                a = out["approve"] = approve(browser, srv, args.runs)
                print(f"approve -> result ({args.runtime})  page median "
                      f"{a['page']['median_ms']:7.1f} ms   API (floor) "
                      f"{a['api']['median_ms']:7.1f} ms   +{a['overhead_median_ms']:.1f} ms "
                      f"(x{a['ratio']})")
            finally:
                browser.close()
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)
        from _common import remove_empty_cgroup_parents

        remove_empty_cgroup_parents(CGROUP)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
