"""A fake Discord on 127.0.0.1: the REST API (v10) that discord.py's ``HTTPClient`` speaks,
plus builders of the gateway dispatch payloads (``MESSAGE_CREATE``, ``INTERACTION_CREATE``)
that the real gateway would send. The inbound side is driven by handing those payloads to
discord.py's own parsers (``client._connection.parsers[...]``), which is what its websocket
does with every dispatch; the outbound side is real HTTP against this server.

What it keeps: users (snowflake id, username, global display name, changeable), DM channels,
every message posted or edited (content, components, attachments), interaction callbacks, and
a log of every request with its time. ``rate_limit(method, path_prefix, n, retry_after)``
answers the next ``n`` matching requests with Discord's 429 (JSON body with ``retry_after``
and a ``Via`` header, as Discord's edge sends it; discord.py refuses a 429 without one).
``hold(method, prefix, match)`` keeps the answer to the next matching request (done: the
message exists) until the returned event is set: a slow platform.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API = "/api/v10"


@dataclass
class Request:
    method: str
    path: str
    query: str
    body: Any
    at: float
    headers: dict[str, str]


@dataclass
class Posted:
    id: str
    channel_id: str
    content: str
    components: list[Any]
    attachments: list[dict[str, Any]]   # {"filename", "data" (bytes)}
    edits: int = 0
    history: list[str] = field(default_factory=list)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscord:
    def __init__(self, *, bot_id: str = "900000000000000001", token: str = "bot-token"
                 ) -> None:
        self.token = token
        self.bot = {"id": bot_id, "username": "closedpaw", "global_name": None,
                    "discriminator": "0", "avatar": None, "bot": True}
        self.app_id = "900000000000000002"
        self.users: dict[str, dict[str, Any]] = {}
        self.dms: dict[str, str] = {}               # user id -> DM channel id
        self.messages: dict[str, Posted] = {}
        self.callbacks: list[dict[str, Any]] = []    # interaction callbacks, in order
        self._pressed: dict[str, str] = {}          # interaction id -> the message pressed
        self._itokens: dict[str, str] = {}          # interaction id -> its token
        self.requests: list[Request] = []
        self.cdn: dict[str, bytes] = {}             # path -> attachment bytes (no auth)
        self._limits: list[list[Any]] = []          # [method, prefix, remaining, retry_after]
        self._holds: list[tuple[str, str, Callable[[Any], bool], threading.Event]] = []
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self._lock = threading.Lock()
        self._tls = threading.local()               # the handler thread's held answer
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urlsplit(self.path)
                if self.command == "GET" and u.path in fake.cdn:   # the CDN: plain bytes
                    blob = fake.cdn[u.path]
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob)
                    return
                status, body, extra = fake._answer(self.command, u.path, u.query, raw,
                                                   dict(self.headers.items()))
                hold = getattr(fake._tls, "hold", None)
                if hold is not None:
                    hold.wait(30)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    # discord.py parses JSON only for exactly this content type
                    self.send_header("Content-Type", "application/json")
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # the client may have gone away (a long-poll sync cancelled at stop)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        class S(ThreadingHTTPServer):
            daemon_threads = True

        self._srv = S(("127.0.0.1", 0), H)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return f"http://127.0.0.1:{self._srv.server_address[1]}{API}"

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeDiscord:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    # -- scripting ---------------------------------------------------------------------------
    def snowflake(self) -> str:
        return str(next(self._ids))

    def add_user(self, uid: str, username: str, display: str | None = None) -> dict[str, Any]:
        u = {"id": uid, "username": username, "global_name": display, "discriminator": "0",
             "avatar": None}
        self.users[uid] = u
        return u

    def rename(self, uid: str, username: str, display: str | None) -> None:
        """Users change their username and display name at will; only the id is fixed."""
        self.users[uid]["username"] = username
        self.users[uid]["global_name"] = display

    def rate_limit(self, method: str, prefix: str, n: int, retry_after: float) -> None:
        with self._lock:
            self._limits.append([method, API + prefix, n, retry_after])

    def hold(self, method: str, prefix: str, match: Callable[[Any], bool]) -> threading.Event:
        """Answer the next ``method`` request under ``prefix`` whose JSON body (or the
        multipart's payload_json) satisfies ``match`` only once the event is set."""
        release = threading.Event()
        with self._lock:
            self._holds.append((method, API + prefix, match, release))
        return release

    def _take_hold(self, method: str, path: str, body: Any) -> threading.Event | None:
        for h in self._holds:   # under self._lock
            if h[0] == method and path.startswith(h[1]) and h[2](body):
                self._holds.remove(h)
                return h[3]
        return None

    def dm_channel(self, uid: str) -> str:
        with self._lock:
            if uid not in self.dms:
                self.dms[uid] = self.snowflake()
            return self.dms[uid]

    def in_channel(self, channel_id: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.channel_id == channel_id]

    def hits(self, method: str, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method
                and r.path.startswith(API + prefix)]

    # -- gateway dispatch payloads -----------------------------------------------------------
    def message_create(self, uid: str, content: str, *, channel_id: str | None = None,
                       guild_id: str | None = None,
                       files: tuple[tuple[str, bytes], ...] = ()) -> dict[str, Any]:
        """The ``d`` of a MESSAGE_CREATE dispatch from user ``uid`` (in their DM unless a
        channel is given), with ``files`` as attachments served from this fake's CDN path."""
        ch = channel_id or self.dm_channel(uid)
        attachments = []
        for name, data in files:
            aid = self.snowflake()
            self.cdn[f"/attachments/{ch}/{aid}/{name}"] = data
            url = f"http://127.0.0.1:{self._srv.server_address[1]}/attachments/{ch}/{aid}/{name}"
            attachments.append({"id": aid, "filename": name, "size": len(data), "url": url,
                                "proxy_url": url, "content_type": "text/plain"})
        d: dict[str, Any] = {
            "id": self.snowflake(), "channel_id": ch, "author": dict(self.users[uid]),
            "content": content, "timestamp": _now_iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": attachments, "embeds": [], "pinned": False, "type": 0,
            "flags": 0, "components": []}
        if guild_id is not None:
            d["guild_id"] = guild_id
        return d

    def button_press(self, uid: str, message_id: str, custom_id: str) -> dict[str, Any]:
        """The ``d`` of an INTERACTION_CREATE dispatch: ``uid`` pressed a button of the
        message ``message_id`` (type 3, component type 2)."""
        m = self.messages[message_id]
        iid = self.snowflake()
        token = f"itoken-{self.snowflake()}"
        self._pressed[iid] = message_id
        self._itokens[iid] = token
        return {
            "id": iid, "application_id": self.app_id, "type": 3,
            "token": token, "version": 1,
            "channel_id": m.channel_id,
            "channel": {"id": m.channel_id, "type": 1},
            "user": dict(self.users[uid]),
            "message": self._message_payload(m),
            "data": {"custom_id": custom_id, "component_type": 2},
            "attachment_size_limit": 10_485_760, "app_permissions": "0",
            "locale": "en-US", "entitlements": [], "authorizing_integration_owners": {},
            "context": 1}

    # -- the REST API ------------------------------------------------------------------------
    def _message_payload(self, m: Posted) -> dict[str, Any]:
        return {"id": m.id, "channel_id": m.channel_id, "author": dict(self.bot),
                "content": m.content, "timestamp": _now_iso(),
                "edited_timestamp": _now_iso() if m.edits else None, "tts": False,
                "mention_everyone": False, "mentions": [], "mention_roles": [],
                "attachments": [{"id": str(i), "filename": a["filename"],
                                 "size": len(a["data"]), "url": "http://127.0.0.1/x",
                                 "proxy_url": "http://127.0.0.1/x"}
                                for i, a in enumerate(m.attachments)],
                "embeds": [], "pinned": False, "type": 0, "flags": 0,
                "components": m.components}

    def _err(self, status: int, code: int, message: str) -> tuple[int, Any, dict[str, str]]:
        return status, {"code": code, "message": message}, {}

    def _answer(self, method: str, path: str, query: str, raw: bytes,
                headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        ctype = headers.get("Content-Type", "")
        body: Any = None
        files: list[dict[str, Any]] = []
        if ctype.startswith("application/json") and raw:
            body = json.loads(raw)
        elif ctype.startswith("multipart/form-data"):
            body, files = _multipart(ctype, raw)
        with self._lock:
            self.requests.append(Request(method, path, query, body, time.monotonic(),
                                         headers))
            self._tls.hold = self._take_hold(method, path, body)
            for lim in self._limits:
                if lim[0] == method and path.startswith(lim[1]) and lim[2] > 0:
                    lim[2] -= 1
                    return 429, {"message": "You are being rate limited.",
                                 "retry_after": lim[3], "global": False}, {
                        "Via": "1.1 google", "Retry-After": str(lim[3])}
        p = path[len(API):] if path.startswith(API) else path
        parts = p.strip("/").split("/")
        if method == "POST" and parts[0] == "interactions" and parts[-1] == "callback":
            # authenticated by the interaction's token, not the bot token (as Discord does)
            if len(parts) != 4 or self._itokens.get(parts[1]) != parts[2]:
                return self._err(401, 50027, "Invalid Webhook Token")
            if any(c["interaction_id"] == parts[1] for c in self.callbacks):
                return self._err(400, 40060, "Interaction has already been acknowledged.")
            with self._lock:
                self.callbacks.append({"interaction_id": parts[1], "body": body})
            data = (body or {}).get("data") or {}
            pressed = self.messages.get(self._pressed.get(parts[1], ""))
            if (body or {}).get("type") == 7 and pressed is not None:
                # UPDATE_MESSAGE: the callback edits the message whose button was pressed
                with self._lock:
                    pressed.history.append(pressed.content)
                    if "content" in data:
                        pressed.content = data["content"] or ""
                    if "components" in data:
                        pressed.components = data["components"] or []
                    pressed.edits += 1
            return 200, {"interaction": {"id": parts[1], "type": 3,
                                         "response_message_ephemeral":
                                             bool(data.get("flags", 0) & 64)}}, {}
        if headers.get("Authorization") != f"Bot {self.token}":
            return self._err(401, 0, "401: Unauthorized")
        if method == "GET" and p == "/users/@me":
            return 200, self.bot, {}
        if method == "GET" and p == "/oauth2/applications/@me":
            return 200, {"id": self.app_id, "name": "closedpaw", "description": "",
                         "icon": None, "bot_public": False, "bot_require_code_grant": False,
                         "owner": {"id": "1", "username": "owner", "discriminator": "0",
                                   "avatar": None, "global_name": None},
                         "verify_key": "00", "flags": 0}, {}
        if method == "POST" and p == "/users/@me/channels":
            uid = str(body["recipient_id"])
            if uid not in self.users:
                return self._err(404, 10013, "Unknown User")
            return 200, {"id": self.dm_channel(uid), "type": 1, "last_message_id": None,
                         "recipients": [self.users[uid]]}, {}
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            cid = parts[1]
            if method == "POST" and len(parts) == 3:
                content = (body or {}).get("content") or ""
                if len(content) > 2000:
                    return 400, {"code": 50035, "message": "Invalid Form Body", "errors": {
                        "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                                 "message": "Must be 2000 or fewer in "
                                                            "length."}]}}}, {}
                m = Posted(self.snowflake(), cid, content, (body or {}).get("components") or [],
                           files)
                with self._lock:
                    self.messages[m.id] = m
                return 200, self._message_payload(m), {}
            if method == "PATCH" and len(parts) == 4:
                m = self.messages.get(parts[3])
                if m is None:
                    return self._err(404, 10008, "Unknown Message")
                with self._lock:
                    m.history.append(m.content)
                    if "content" in (body or {}):
                        m.content = body["content"] or ""
                    if "components" in (body or {}):
                        m.components = body["components"] or []
                    m.edits += 1
                return 200, self._message_payload(m), {}
        return self._err(404, 0, f"404: Not Found ({method} {p})")


def _multipart(ctype: str, raw: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """discord.py's multipart: a ``payload_json`` part and ``files[n]`` parts."""
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    body: Any = None
    files: list[dict[str, Any]] = []
    for part in raw.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, data = part.partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        h = head.decode("latin-1")
        if 'name="payload_json"' in h:
            body = json.loads(data)
        elif 'name="files[' in h:
            fn = h.split('filename="', 1)[1].split('"', 1)[0] if 'filename="' in h else "file"
            files.append({"filename": fn, "data": data})
    return body, files
