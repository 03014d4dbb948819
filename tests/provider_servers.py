"""Scripted servers on 127.0.0.1 that speak each provider's real wire protocol: Ollama's
``/api/chat`` (JSON and NDJSON streams), OpenAI Chat Completions (JSON and SSE ``data:``
chunks ending ``[DONE]``), Anthropic Messages (JSON and named SSE events) and Gemini
``generateContent`` (JSON and ``alt=sse``). ``mode`` picks what the next answers are: plain,
tools, 401, 429 (Retry-After: 7), 500, timeout (answers after ``delay_s``) or malformed (200
with a body that is not JSON). ``script`` (a list of replies) overrides plain/tools: each
request pops the next reply, for scripted models in loop tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MODES = ("plain", "tools", "401", "429", "500", "timeout", "malformed", "nonstream")


@dataclass
class Reply:
    """What the scripted model says next: text, and/or tool calls (name, arguments)."""

    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raw_arguments: str | None = None   # openai only: send this arguments string verbatim


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    at: float = 0.0            # time.perf_counter() when the request was read
    answered_at: float = 0.0   # ... when its answer was written


class ProviderServer:
    """``kind`` in ollama, openai, anthropic, google."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.mode = "plain"
        self.delay_s = 3.0
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("latin-1")
                seen = Seen(self.command, self.path, body,
                            {k.lower(): v for k, v in self.headers.items()}, time.perf_counter())
                with outer._lock:
                    outer.seen.append(seen)
                status, headers, payload = outer._answer(self.command, self.path, body)
                if isinstance(payload, bytes):
                    # headers and body in one write (two small writes meet Nagle's algorithm
                    # and the client's delayed ACK: +40 ms)
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self._headers_buffer.append(b"\r\n" + payload)
                    self.flush_headers()
                    self.wfile.flush()
                    seen.answered_at = time.perf_counter()
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in payload:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                seen.answered_at = time.perf_counter()

            do_GET = do_POST = _handle

        class S(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass   # a client that gave up (timeout tests) is not an error here

        self._httpd = S(("127.0.0.1", 0), H)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> ProviderServer:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    # -- the answers ---------------------------------------------------------------------
    def _next(self) -> Reply:
        with self._lock:
            if self.script:
                return self.script.pop(0)
        if self.mode == "tools":
            return Reply(calls=[("run_code", {"language": "python", "code": "print(42)"})])
        return Reply(text="Hello from the scripted model.")

    def _answer(self, method: str, path: str, body: Any
                ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        js = {"Content-Type": "application/json"}
        mode = self.mode
        if mode == "timeout":
            self._stop.wait(self.delay_s)
        if mode == "401":
            return 401, js, json.dumps(self._err(401, "invalid api key")).encode()
        if mode == "429":
            return 429, {**js, "Retry-After": "7"}, json.dumps(
                self._err(429, "rate limit reached")).encode()
        if mode == "500":
            return 500, js, json.dumps(self._err(500, "internal error")).encode()
        if mode == "malformed":
            streaming = (isinstance(body, dict) and body.get("stream")) or \
                ":streamGenerateContent" in path
            if streaming and self.kind == "ollama":
                return 200, {"Content-Type": "application/x-ndjson"}, iter(
                    [b'{"model": "m", "message": {"role": "assis\n'])
            if streaming:
                return 200, {"Content-Type": "text/event-stream"}, iter(
                    [b'event: message_start\ndata: {"type": "message_start", "mess\n\n'])
            return 200, js, b'{"this is": not json'
        if mode == "nonstream":   # a JSON answer to a request for a stream
            if isinstance(body, dict):
                body = {**body, "stream": False}
            path = path.replace(":streamGenerateContent", ":generateContent")
        route = urlsplit(path)
        return getattr(self, f"_{self.kind}")(method, route.path, route.query, body)

    def _err(self, status: int, msg: str) -> dict[str, Any]:
        if self.kind == "ollama":
            return {"error": msg}
        if self.kind == "anthropic":
            kind = {401: "authentication_error", 429: "rate_limit_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": msg}}
        if self.kind == "google":
            st = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED"}.get(status, "INTERNAL")
            return {"error": {"code": status, "message": msg, "status": st}}
        return {"error": {"message": msg, "type": "invalid_request_error", "code": None}}

    # -- ollama: /api/chat (JSON or NDJSON), /api/tags -----------------------------------
    def _ollama(self, method: str, path: str, query: str, body: Any
                ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        if path == "/api/tags":
            return 200, {"Content-Type": "application/json"}, json.dumps({"models": [
                {"name": "qwen2.5-coder:0.5b", "model": "qwen2.5-coder:0.5b",
                 "modified_at": "2026-01-01T00:00:00Z", "size": 397807936,
                 "digest": "0" * 64, "details": {"format": "gguf"}}]}).encode()
        r = self._next()
        model = body.get("model", "m")
        msg: dict[str, Any] = {"role": "assistant", "content": r.text}
        if r.calls:
            msg["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in r.calls]
        done = {"model": model, "created_at": "2026-01-01T00:00:00Z", "done": True,
                "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 7}
        if not body.get("stream"):
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {**done, "message": msg}).encode()

        def gen() -> Iterator[bytes]:
            for w in _words(r.text):
                yield json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                  "message": {"role": "assistant", "content": w},
                                  "done": False}).encode() + b"\n"
            last = {**done, "message": {"role": "assistant", "content": ""}}
            if r.calls:
                last["message"]["tool_calls"] = msg["tool_calls"]
            yield json.dumps(last).encode() + b"\n"
        return 200, {"Content-Type": "application/x-ndjson"}, gen()

    # -- openai: /v1/chat/completions (JSON or SSE), /v1/models --------------------------
    def _openai(self, method: str, path: str, query: str, body: Any
                ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        js = {"Content-Type": "application/json"}
        if path.endswith("/models"):
            return 200, js, json.dumps({"object": "list", "data": [
                {"id": "scripted-model", "object": "model", "created": 0,
                 "owned_by": "closedpaw-tests"}]}).encode()
        r = self._next()
        model = body.get("model", "m")
        calls = [{"id": f"call_{i}", "type": "function",
                  "function": {"name": n, "arguments": r.raw_arguments
                               if r.raw_arguments is not None else json.dumps(a)}}
                 for i, (n, a) in enumerate(r.calls)]
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": r.text or None}
            if calls:
                msg["tool_calls"] = calls
            return 200, js, json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": msg,
                             "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": usage}).encode()

        def chunk(delta: dict[str, Any], finish: str | None = None,
                  use: dict[str, Any] | None = None) -> bytes:
            c: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                 "created": 0, "model": model,
                                 "choices": [] if use else [{"index": 0, "delta": delta,
                                                             "finish_reason": finish}]}
            if use:
                c["usage"] = use
            return b"data: " + json.dumps(c).encode() + b"\n\n"

        def gen() -> Iterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for w in _words(r.text):
                yield chunk({"content": w})
            for i, c in enumerate(calls):
                args = c["function"]["arguments"]
                half = len(args) // 2
                yield chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                             "function": {"name": c["function"]["name"],
                                                          "arguments": args[:half]}}]})
                yield chunk({"tool_calls": [{"index": i,
                                             "function": {"arguments": args[half:]}}]})
            yield chunk({}, "tool_calls" if calls else "stop")
            yield chunk({}, use=usage)
            yield b"data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, gen()

    # -- anthropic: /v1/messages (JSON or named SSE events), /v1/models ------------------
    def _anthropic(self, method: str, path: str, query: str, body: Any
                   ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        js = {"Content-Type": "application/json"}
        if path.endswith("/models"):
            return 200, js, json.dumps({"data": [
                {"type": "model", "id": "claude-scripted", "display_name": "Scripted",
                 "created_at": "2026-01-01T00:00:00Z"}], "has_more": False,
                "first_id": "claude-scripted", "last_id": "claude-scripted"}).encode()
        r = self._next()
        model = body.get("model", "m")
        content: list[dict[str, Any]] = [{"type": "text", "text": r.text}] if r.text else []
        content += [{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
                    for i, (n, a) in enumerate(r.calls)]
        stop = "tool_use" if r.calls else "end_turn"
        if not body.get("stream"):
            return 200, js, json.dumps({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 7}}).encode()

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        def gen() -> Iterator[bytes]:
            yield ev("message_start", {"message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 1}}})
            idx = 0
            if r.text:
                yield ev("content_block_start", {"index": idx,
                                                 "content_block": {"type": "text", "text": ""}})
                for w in _words(r.text):
                    yield ev("content_block_delta", {"index": idx, "delta": {
                        "type": "text_delta", "text": w}})
                yield ev("content_block_stop", {"index": idx})
                idx += 1
            for i, (n, a) in enumerate(r.calls):
                yield ev("content_block_start", {"index": idx, "content_block": {
                    "type": "tool_use", "id": f"toolu_{i}", "name": n, "input": {}}})
                s = json.dumps(a)
                for part in (s[:len(s) // 2], s[len(s) // 2:]):
                    yield ev("content_block_delta", {"index": idx, "delta": {
                        "type": "input_json_delta", "partial_json": part}})
                yield ev("content_block_stop", {"index": idx})
                idx += 1
            yield ev("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": 7}})
            yield ev("message_stop", {})
        return 200, {"Content-Type": "text/event-stream"}, gen()

    # -- google: /v1beta/models/M:generateContent (JSON) / :streamGenerateContent?alt=sse --
    def _google(self, method: str, path: str, query: str, body: Any
                ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        js = {"Content-Type": "application/json"}
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, js, json.dumps({"models": [
                {"name": "models/gemini-scripted", "displayName": "Scripted"}]}).encode()
        r = self._next()
        model = path.rsplit("/", 1)[-1].split(":")[0]
        usage = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}

        def resp(parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if final:
                cand["finishReason"] = "STOP"
            out: dict[str, Any] = {"candidates": [cand], "modelVersion": model}
            if final:
                out["usageMetadata"] = usage
            return out

        call_parts = [{"functionCall": {"name": n, "args": a}} for n, a in r.calls]
        if ":streamGenerateContent" not in path:
            parts = ([{"text": r.text}] if r.text else []) + call_parts
            return 200, js, json.dumps(resp(parts, True)).encode()

        def gen() -> Iterator[bytes]:
            words = _words(r.text)
            for w in words:
                yield b"data: " + json.dumps(resp([{"text": w}], False)).encode() + b"\r\n\r\n"
            yield b"data: " + json.dumps(resp(call_parts or [{"text": ""}], True)).encode() \
                + b"\r\n\r\n"
        return 200, {"Content-Type": "text/event-stream"}, gen()


def _words(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False
