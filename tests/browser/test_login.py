"""Logging in and out of the web UI, and attacks on it from outside: session fixation, the
one-time link reused or leaked through Referer, the session cookie on other paths, CSRF from
another origin (JSON, a text/plain form post, no-cors fetch), the login form without its
nonce, framing, and the security headers of every page."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import closedpaw
from tests.browser.conftest import login, running
from tests.conftest import TEST_CGROUP, TEST_STATE, require_runtime
from tests.integration.conftest import free_port, wait_for
from tests.provider_servers import ProviderServer

NAV = ["Chat", "Approvals", "Audit", "Sandboxes", "Providers"]


def _session_cookie(page: Any) -> dict[str, Any]:
    got = [c for c in page.context.cookies() if c["name"] == "closedpaw_session"
           and c["path"] == "/"]
    assert len(got) == 1, got
    return got[0]  # type: ignore[no-any-return]


def _as_cookie(url: str, sid: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, trust_env=False,
                        cookies={"closedpaw_session": sid})


def test_login_by_token_gives_a_strict_httponly_cookie_and_logout_revokes_it(
        tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path) as rig:
        page = new_page()
        page.goto(rig.url + "/")
        assert page.url.endswith("/login")       # no session: the login page
        assert page.get_attribute("#token", "name") == "token"
        login(page, rig)
        assert [a.inner_text() for a in page.query_selector_all("nav a")] == NAV
        c = _session_cookie(page)
        assert c["httpOnly"] and c["sameSite"] == "Strict" and c["path"] == "/"
        assert not c["secure"]          # plain http on loopback; Secure over TLS (unit below)
        assert c["expires"] == -1       # a browser-session cookie; the server ends it when idle
        assert page.evaluate("document.cookie") == ""   # scripts cannot read it
        with _as_cookie(rig.url, c["value"]) as cli:
            assert cli.get("/api/status").status_code == 200
        page.click("text=Log out")
        page.wait_for_url(re.compile(r".*/login$"))
        with _as_cookie(rig.url, c["value"]) as cli:   # the old cookie is dead server-side
            r = cli.get("/api/status")
            assert r.status_code == 401, r.text
            assert cli.get("/approvals", follow_redirects=False).headers["location"] == "/login"
        page.goto(rig.url + "/approvals")
        assert page.url.endswith("/login")
        events = [e.event for e in rig.gate.audit.entries(after_seq=0)]
        assert "web.login" in events and "web.logout" in events


def test_a_wrong_token_is_refused_and_counted(tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path) as rig:
        page = new_page()
        page.goto(rig.url + "/login")
        page.fill("#token", "cpw_" + "A" * 43)
        page.click("button[type=submit]")
        assert page.url.endswith("/login")
        assert "unknown or revoked" in page.inner_text(".error")
        assert not [c for c in page.context.cookies() if c["name"] == "closedpaw_session"]
        assert rig.app.state.auth_failures.take()[0]


@contextlib.contextmanager
def _serve(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    model = ProviderServer("openai")
    prov = tmp_path / "providers.yaml"
    prov.write_text(json.dumps({"providers": [{"type": "openai", "name": "scripted",
                                               "base_url": f"{model.url}/v1",
                                               "model": "scripted-model"}]}))
    port = free_port()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(TEST_STATE),
           "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP, "CLOSEDPAW_PROVIDERS_FILE": str(prov),
           "PYTHONPATH": str(Path(closedpaw.__file__).parents[1])}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("closedpaw")), "serve",
                             "--port", str(port), "--data-dir", str(tmp_path / "data")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    link: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"(http://\S+/login\?code=\S+)", line)
            if m:
                link.append(m.group(1))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while not link and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert link, "closedpaw serve printed no login link:\n" + "".join(lines)
        base = link[0].split("/login")[0]

        def up() -> bool:   # the link is printed as start-up ends, just before it listens
            try:
                return httpx.get(base + "/api/health", trust_env=False).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, "".join(lines)
                return False
        wait_for(up, "closedpaw serve to listen")
        yield link[0], proc, lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        t.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        model.close()


def test_the_one_time_link_printed_by_closedpaw_serve_logs_in_once_and_never_leaks(
        tmp_path: Path, new_page: Any) -> None:
    require_runtime("runsc")
    with _serve(tmp_path) as (link, _proc, lines):
        assert f"web UI on http://127.0.0.1:{link.split(':')[2].split('/')[0]}/" in "".join(lines)
        code = link.split("code=")[1]
        page = new_page()
        seen: list[dict[str, str]] = []
        page.on("request", lambda r: seen.append({"url": r.url, **r.headers}))
        resp = page.goto(link)
        assert resp is not None
        page.wait_for_url(re.compile(r".*/chat$"))
        page.wait_for_selector("#app[data-ready='1']")
        assert code not in page.url
        _session_cookie(page)
        # nothing the page loaded after the link carried the code (Referrer-Policy:
        # no-referrer; the link answers a redirect before anything renders)
        later = [r for r in seen if r["url"] != link]
        assert later, seen
        for r in later:
            assert code not in r.get("referer", ""), r
            assert code not in r["url"], r
        # used once: a second visit (another browser, or an attacker who read the link in
        # the history or a log) gets the login page and no session
        other = new_page()
        other.goto(link)
        assert other.url.endswith(f"/login?code={code}")
        assert "used already" in other.inner_text(".error")
        assert not [c for c in other.context.cookies() if c["name"] == "closedpaw_session"]


def test_an_idle_session_expires(tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path, web_session_idle_s=2.0) as rig:
        page = new_page()
        login(page, rig)
        sid = _session_cookie(page)["value"]
        time.sleep(1.0)
        page.goto(rig.url + "/audit")                 # used: the idle clock starts again
        page.wait_for_selector("#app[data-ready='1']")
        time.sleep(2.5)
        page.goto(rig.url + "/approvals")
        assert page.url.endswith("/login")
        with _as_cookie(rig.url, sid) as cli:
            assert cli.get("/api/status").status_code == 401


def test_session_fixation_a_planted_cookie_is_never_adopted(tmp_path: Path,
                                                             new_page: Any) -> None:
    """An attacker who can plant a cookie (a sibling subdomain, a shared machine) gains
    nothing: the login issues a new id, and the id the victim had before is revoked."""
    with running(tmp_path) as rig:
        # the attacker's own live session id, planted in the victim's browser
        attacker = new_page()
        login(attacker, rig)
        planted = _session_cookie(attacker)["value"]
        victim = new_page()
        victim.context.add_cookies([
            {"name": "closedpaw_session", "value": planted, "domain": "127.0.0.1",
             "path": "/"},
            {"name": "closedpaw_session", "value": "made-up", "domain": "127.0.0.1",
             "path": "/login"}])
        login(victim, rig)
        now = _session_cookie(victim)["value"]
        assert now != planted
        with _as_cookie(rig.url, planted) as cli:
            assert cli.get("/api/status").status_code == 401    # revoked by the login
        with _as_cookie(rig.url, "made-up") as cli:
            assert cli.get("/api/status").status_code == 401
        # cookie tossing: the attacker logs in again and plants the new live id on a
        # narrower path, beside the victim's: the server takes neither (whose would it be?)
        login(attacker, rig)
        tossed = _session_cookie(attacker)["value"]
        victim.context.add_cookies([{"name": "closedpaw_session", "value": tossed,
                                     "domain": "127.0.0.1", "path": "/api"}])
        status = victim.evaluate("fetch('/api/status').then(r => r.status)")
        assert status == 401
        with _as_cookie(rig.url, now) as cli:   # the victim's session itself is intact
            assert cli.get("/api/status").status_code == 200


def test_security_headers_on_every_page(tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path) as rig:
        page = new_page()
        login(page, rig)
        with _as_cookie(rig.url, _session_cookie(page)["value"]) as cli:
            for path in ["/login", "/chat", "/approvals", "/audit", "/sandboxes",
                         "/providers", "/static/common.js", "/api/status"]:
                h = cli.get(path).headers
                csp = h["content-security-policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
                assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
                assert h["x-frame-options"] == "DENY", path
                assert h["referrer-policy"] == "no-referrer", path
                assert h["x-content-type-options"] == "nosniff", path
        # a page on another origin cannot frame the UI
        evil = new_page()
        evil.set_content(f'<iframe id="f" src="{rig.url}/login"></iframe>')
        evil.wait_for_timeout(500)
        frame = evil.frame_locator("#f")
        assert frame.locator("#token").count() == 0


@contextlib.contextmanager
def _evil_site(html: str) -> Iterator[str]:
    """Another origin on 127.0.0.1 (same site for the browser: SameSite does not stop it;
    the CSRF check must)."""
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)


def test_state_changes_from_another_origin_without_the_csrf_token_are_refused(
        tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path) as rig:
        page = new_page()
        login(page, rig)
        sid = _session_cookie(page)["value"]
        target = f"{rig.url}/api/actions"
        field = ('{"action_type":"code_execution","parameters":{"language":"python",'
                 '"code":"print(1)","pad":"')
        attack = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}" enctype="text/plain" target="out">
<input name='{field}' value='"}}}}'></form>
<iframe name="out"></iframe>
<script>
window.results = [];
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{action_type: "code_execution",
                         parameters: {{language: "python", code: "print(2)"}}}})}})
  .then(r => results.push("fetch:" + r.type)).catch(e => results.push("fetch-error"));
fetch("{rig.url}/logout", {{method: "POST", mode: "no-cors", credentials: "include"}})
  .then(r => results.push("logout:" + r.type)).catch(e => results.push("logout-error"));
fetch("{rig.url}/api/status", {{mode: "no-cors", credentials: "include"}})
  .then(r => results.push("status:" + r.type)).catch(e => results.push("status-error"));
const img = new Image();
img.onerror = () => results.push("img-error");
img.src = "{rig.url}/api/actions/some-id/secret";
document.getElementById("f").submit();
</script></body></html>"""
        with _evil_site(attack) as evil:
            ev = page.context.new_page()
            sent: list[Any] = []
            ev.on("request", lambda r: sent.append(r) if r.url.startswith(rig.url)
                  and not r.url.endswith("/csp-report") else None)   # (the 403 in the frame)
            ev.goto(evil + "/")
            ev.wait_for_function("() => window.results && window.results.length === 4")
            ev.wait_for_timeout(1000)
            # every request went out with the cookie (same site) and was refused: 403, or
            # an answer so marked (CORP same-origin) that the browser would not hand it over
            assert sorted((r.method, r.url.split(rig.url)[1]) for r in sent) == [
                ("GET", "/api/actions/some-id/secret"), ("GET", "/api/status"),
                ("POST", "/api/actions"), ("POST", "/api/actions"), ("POST", "/logout")]
            for r in sent:
                got = r.response()   # 403, not 401: the cookie went, and did not suffice
                assert got is None or got.status == 403, (r.url, got.status)
            # the server's own count: the four API requests came with the session cookie and
            # were refused as cross-origin (the forged logout is checked below)
            counts = rig.app.state.auth_failures.take()[0]["127.0.0.1"]
            assert counts.get("web request from another origin or for a secret") == 4, counts
            # and the answers, marked Cross-Origin-Resource-Policy: same-origin, never
            # reached the other origin's page
            assert ev.evaluate("window.results.sort()") == [
                "fetch-error", "img-error", "logout-error", "status-error"]
        assert rig.gate.list_actions(limit=10) == []
        with _as_cookie(rig.url, sid) as cli:   # the session survived the forged logout
            assert cli.get("/api/status").status_code == 200
            body = {"action_type": "code_execution",
                    "parameters": {"language": "python", "code": "print(3)"}}
            # the cookie alone, the right token from the wrong origin, a wrong token: refused
            assert cli.post("/api/actions", json=body).status_code == 403
            csrf = page.get_attribute('meta[name="csrf-token"]', "content")
            assert csrf
            assert cli.post("/api/actions", json=body, headers={
                "X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
            assert cli.post("/api/actions", json=body, headers={
                "X-CSRF-Token": csrf[:-1] + "x"}).status_code == 403
            # the session cookie does not open other state-changing paths without the token
            for path in ("/mcp", "/api/conversations", "/api/vault/unlock"):
                assert cli.post(path, json={}).status_code == 403, path
            # a secret's one-time delivery is never for a browser session, token or not
            assert cli.get("/api/actions/x/secret", headers={"X-CSRF-Token": csrf}
                           ).status_code == 403
            assert cli.get("/api/status", headers={"Sec-Fetch-Site": "same-site"}
                           ).status_code == 403
            assert cli.put("/api/secrets/x", json={"value": "v"}).status_code == 403
            assert rig.gate.list_actions(limit=10) == []
            # positive control: the page's own request (token, own origin) goes through
            ok = cli.post("/api/actions", json=body,
                          headers={"X-CSRF-Token": csrf, "Origin": rig.url})
            assert ok.status_code == 201, ok.text
        assert len(rig.gate.list_actions(limit=10)) == 1


def test_the_login_form_needs_its_nonce_and_is_not_a_token_oracle(tmp_path: Path) -> None:
    """A login posted from another site (no nonce cookie, or a wrong one) is refused before
    the token is looked at; the login nonce cookie is scoped to /login."""
    with running(tmp_path) as rig, httpx.Client(base_url=rig.url, trust_env=False,
                                                timeout=30) as cli:
        page = cli.get("/login")
        set_cookie = page.headers["set-cookie"]
        assert "Path=/login" in set_cookie and "HttpOnly" in set_cookie
        assert "SameSite=strict" in set_cookie or "SameSite=Strict" in set_cookie
        nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert nonce
        r = httpx.post(rig.url + "/login", data={"token": rig.token, "csrf": "x"},
                       follow_redirects=False)
        assert r.status_code == 403 and "closedpaw_session" not in r.headers.get(
            "set-cookie", "")
        r = cli.post("/login", data={"token": rig.token, "csrf": nonce.group(1)},
                     headers={"Origin": "http://evil.example"}, follow_redirects=False)
        assert r.status_code == 403
        r = cli.post("/login", content=json.dumps({"token": rig.token}),
                     headers={"Content-Type": "text/plain"}, follow_redirects=False)
        assert r.status_code == 415
        # each refusal answered a fresh form with a new nonce: the old one is spent
        r = cli.post("/login", data={"token": rig.token, "csrf": nonce.group(1)},
                     follow_redirects=False)
        assert r.status_code == 403
        nonce = re.search(r'name="csrf" value="([^"]+)"', cli.get("/login").text)
        assert nonce
        r = cli.post("/login", data={"token": rig.token, "csrf": nonce.group(1)},
                     follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/chat"
        assert "closedpaw_session=" in r.headers["set-cookie"]


def test_a_revoked_token_ends_its_sessions(tmp_path: Path, new_page: Any) -> None:
    with running(tmp_path) as rig:
        token = rig.gate.create_principal("bob", "user")
        page = new_page()
        login(page, rig, token)
        sid = _session_cookie(page)["value"]
        with rig.client() as admin:
            admin_r = admin.get("/api/status")
            assert admin_r.status_code == 200
        rig.gate.revoke_principal("bob")
        with _as_cookie(rig.url, sid) as cli:
            assert cli.get("/api/status").status_code == 401
        page.goto(rig.url + "/chat")
        assert page.url.endswith("/login")


def test_the_cookies_are_secure_over_tls(tmp_path: Path) -> None:
    """Served over https (here: the app under Starlette's TestClient on an https:// base
    URL), the login nonce and the session cookie carry Secure."""
    from fastapi.testclient import TestClient

    from closedpaw.api import create_app
    from closedpaw.gate import Gate
    from closedpaw.providers import Gateway, OpenAIConfig
    from closedpaw.settings import Settings

    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP)
    gate = Gate(s)
    gw = Gateway([OpenAIConfig(name="none", base_url="http://127.0.0.1:9/v1", model="m")],
                 default="none")
    try:
        with TestClient(create_app(s, gate=gate, providers=gw),
                        base_url="https://127.0.0.1") as c:
            page = c.get("/login")
            assert "Secure" in page.headers["set-cookie"]
            nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert nonce
            r = c.post("/login", data={"token": s.token_file.read_text().strip(),
                                       "csrf": nonce.group(1)}, follow_redirects=False)
            assert r.status_code == 303, r.text
            cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie"
                      and v.startswith("closedpaw_session=")]
            assert cookie and "Secure" in cookie[0] and "HttpOnly" in cookie[0]
    finally:
        gate.close()
        gw.close()


def test_a_flood_of_csp_reports_is_counted_not_kept_or_logged(
        tmp_path: Path, caplog: Any) -> None:
    """/csp-report is public (browsers post there without credentials): a flood of reports
    keeps and logs at most the per-minute share; the rest is only counted, so it fills
    neither the log nor memory."""
    from closedpaw.web.pages import CSP_REPORTS_PER_MINUTE

    with running(tmp_path) as rig, httpx.Client(base_url=rig.url, trust_env=False) as anon:
        caplog.set_level("WARNING", logger="closedpaw.web")
        for i in range(CSP_REPORTS_PER_MINUTE + 70):
            r = anon.post("/csp-report", content=json.dumps(
                {"csp-report": {"blocked-uri": "eval", "n": i, "pad": "x" * 2000}}),
                headers={"Content-Type": "application/csp-report"})
            assert r.status_code == 204
        with rig.client() as c:
            got = c.get("/api/web/csp-reports").json()
        logged = [r for r in caplog.records if "content security policy report" in r.message]
    assert len(got["reports"]) <= CSP_REPORTS_PER_MINUTE + 1, len(got["reports"])
    assert got["dropped"] >= 69, got["dropped"]
    assert len(logged) == len(got["reports"]), (len(logged), len(got["reports"]))
