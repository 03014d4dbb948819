"""Shared plumbing for the fake chat-platform servers: a threaded HTTP server on 127.0.0.1
(port 0) whose subclasses answer each platform's real wire protocol; every request is recorded
with its decoded body (JSON, form-encoded or multipart), and ``rate_limit(method, n)`` makes the
next ``n`` calls of one method answer "429 Too Many Requests" the way that platform does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["Call", "FakePlatform", "wait_until"]


@dataclass
class Call:
    """One request as the fake saw it. ``fields`` holds form/JSON values; ``files`` the
    uploaded parts of a multipart body (name -> (filename, bytes))."""

    method: str
    path: str
    headers: dict[str, str]
    fields: dict[str, Any]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    raw: bytes = b""
    at: float = 0.0
    status: int = 0


def parse_body(content_type: str, raw: bytes
               ) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    ctype = content_type.split(";")[0].strip().lower()
    if not raw:
        return {}, {}
    if ctype == "application/json":
        v = json.loads(raw)
        return (v if isinstance(v, dict) else {"_": v}), {}
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode(), keep_blank_values=True)), {}
    if ctype == "multipart/form-data":
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, Any] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fname = part.get_filename()
            data = part.get_payload(decode=True) or b""
            if fname is not None:
                files[str(name)] = (fname, data)
            else:
                fields[str(name)] = data.decode()
        return fields, files
    return {"_raw": raw.decode("latin-1")}, {}


class FakePlatform:
    """Subclasses implement :meth:`answer` (method, path, query, call) -> (status, headers,
    body bytes) and :meth:`too_many` (the platform's 429 answer for one method)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._limits: dict[str, int] = {}
        self.closed = False
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urlsplit(self.path)
                fields, files = parse_body(self.headers.get("content-type", ""), raw)
                fields.update({k: v for k, v in parse_qsl(u.query) if k not in fields})
                call = Call(self.command, unquote(u.path), {k.lower(): v for k, v in
                                                   self.headers.items()},
                            fields, files, raw, time.monotonic())
                status, headers, body = outer._route(call)
                call.status = status
                with outer.cond:
                    outer.calls.append(call)
                    outer.cond.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

        class S(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass   # a client that hung up (shutdown during a long poll) is not an error

        self._httpd = S(("127.0.0.1", 0), H)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rate_limit(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are answered with the platform's 429."""
        with self.lock:
            self._limits[method] = self._limits.get(method, 0) + times

    def _route(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        method = self.method_of(call)
        with self.lock:
            left = self._limits.get(method, 0)
            if left:
                self._limits[method] = left - 1
        if left:
            return self.too_many(method)
        return self.answer(method, call)

    # -- for subclasses ----------------------------------------------------------------------
    def method_of(self, call: Call) -> str:
        return call.path.rsplit("/", 1)[-1]

    def answer(self, method: str, call: Call) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def too_many(self, method: str) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    # -- for tests ---------------------------------------------------------------------------
    def of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if self.method_of(c) == method]

    def wait(self, pred: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                self.cond.release()
                try:
                    v = pred()
                finally:
                    self.cond.acquire()
                if v:
                    return v
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.cond.wait(min(left, 0.2))

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def wait_until(pred: Callable[[], Any], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False
