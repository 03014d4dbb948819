"""A fake Matrix homeserver on 127.0.0.1: the client-server API (v3) that matrix-nio's
``AsyncClient(homeserver)`` speaks, for one bot account and the rooms it is in.

Endpoints: ``POST /login`` (m.login.password and m.login.token), ``GET /account/whoami``,
``GET /sync`` (long-poll with ``since`` / ``timeout``; joined rooms with their timeline and
state events), ``PUT /rooms/{room}/send/{type}/{txn}`` (idempotent per transaction id, as
the spec says), ``PUT /rooms/{room}/redact/{event}/{txn}``, ``POST /join/{room}`` and the media
``POST /_matrix/media/v3/upload``. Edits are ``m.room.message`` events carrying
``m.relates_to: {rel_type: m.replace}`` and ``m.new_content``; :meth:`current` applies them.

Scripting: :meth:`say` puts a message from a user into a room's next sync, :meth:`rename`
sends the ``m.room.member`` state event that changes a display name, :meth:`rate_limit`
answers the next ``n`` matching requests with ``429 M_LIMIT_EXCEEDED`` and
``retry_after_ms`` (and a ``Retry-After`` header). Every request is logged with its time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CS = "/_matrix/client/v3"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    at: float


@dataclass
class Sent:
    event_id: str
    room_id: str
    type: str
    content: dict[str, Any]
    txn: str
    sender: str
    redacted: bool = False


@dataclass
class Room:
    room_id: str
    members: dict[str, str | None] = field(default_factory=dict)   # user id -> display name


class FakeMatrix:
    def __init__(self, *, bot: str = "@closedpaw:fake.test", password: str = "bot-password",
                 token: str = "syt_bot_token") -> None:
        self.bot = bot
        self.password = password
        self.token = token
        self.device_id = "CLOSEDPAWDEV"
        self.rooms: dict[str, Room] = {}
        self.sent: list[Sent] = []
        self.uploads: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self._log: list[tuple[str, dict[str, Any], bool]] = []   # (room, event, is_state)
        self._txns: dict[tuple[str, str], str] = {}
        self._limits: list[list[Any]] = []      # [method, path fragment, remaining, ms]
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urlsplit(self.path)
                status, body, extra = fake._answer(
                    self.command, unquote(u.path), parse_qs(u.query), raw,
                    dict(self.headers.items()))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # the client may have gone away (a long-poll sync cancelled at stop)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class S(ThreadingHTTPServer):
            daemon_threads = True

        self._srv = S(("127.0.0.1", 0), H)
        self._closed = False
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The homeserver URL for ``AsyncClient(homeserver)``."""
        return f"http://127.0.0.1:{self._srv.server_address[1]}"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeMatrix:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    # -- scripting ---------------------------------------------------------------------------
    def _event_id(self) -> str:
        return f"$ev{next(self._ids)}:fake.test"

    def _push(self, room_id: str, ev: dict[str, Any], state: bool = False) -> None:
        with self._cond:
            self._log.append((room_id, ev, state))
            self._cond.notify_all()

    def room(self, room_id: str, *members: tuple[str, str | None]) -> str:
        """A room the bot is joined to, with these (user id, display name) members."""
        r = Room(room_id)
        self.rooms[room_id] = r
        for uid, name in ((self.bot, "ClosedPaw"), *members):
            r.members[uid] = name
            self._push(room_id, self._member(uid, name), state=True)
        return room_id

    def _member(self, uid: str, name: str | None) -> dict[str, Any]:
        return {"type": "m.room.member", "state_key": uid, "sender": uid,
                "event_id": self._event_id(), "origin_server_ts": int(time.time() * 1000),
                "content": {"membership": "join",
                            **({"displayname": name} if name else {})}}

    def rename(self, room_id: str, uid: str, name: str) -> None:
        """``uid`` sets its display name to ``name`` (anyone may choose any display name)."""
        self.rooms[room_id].members[uid] = name
        self._push(room_id, self._member(uid, name), state=False)

    def say(self, room_id: str, uid: str, body: str, *,
            relates_to: dict[str, Any] | None = None) -> str:
        """A text message from ``uid`` into the room's next sync; returns its event id."""
        eid = self._event_id()
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if relates_to:
            content["m.relates_to"] = relates_to
        self._push(room_id, {"type": "m.room.message", "sender": uid, "event_id": eid,
                             "origin_server_ts": int(time.time() * 1000),
                             "content": content})
        return eid

    def react(self, room_id: str, uid: str, target: str, key: str) -> str:
        eid = self._event_id()
        self._push(room_id, {"type": "m.reaction", "sender": uid, "event_id": eid,
                             "origin_server_ts": int(time.time() * 1000),
                             "content": {"m.relates_to": {"rel_type": "m.annotation",
                                                          "event_id": target, "key": key}}})
        return eid

    def rate_limit(self, method: str, fragment: str, n: int, retry_after_ms: int) -> None:
        with self._cond:
            self._limits.append([method, fragment, n, retry_after_ms])

    def messages(self, room_id: str) -> list[Sent]:
        """The bot's messages in a room, edits folded in (see :meth:`current`), redacted
        ones left out."""
        return [s for s in self.sent if s.room_id == room_id and s.type == "m.room.message"
                and not s.redacted and not _is_edit(s.content)]

    def current(self, event_id: str) -> dict[str, Any]:
        """The content of a message with its latest ``m.replace`` edit applied."""
        base = next(s for s in self.sent if s.event_id == event_id)
        content = dict(base.content)
        for s in self.sent:
            rel = s.content.get("m.relates_to") or {}
            if rel.get("rel_type") == "m.replace" and rel.get("event_id") == event_id:
                content = dict(s.content["m.new_content"])
        return content

    def hits(self, method: str, fragment: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    # -- the API -----------------------------------------------------------------------------
    @staticmethod
    def _err(status: int, code: str, msg: str, **more: Any
             ) -> tuple[int, Any, dict[str, str]]:
        return status, {"errcode": code, "error": msg, **more}, {}

    def _answer(self, method: str, path: str, query: dict[str, list[str]], raw: bytes,
                headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        body: Any = None
        if (raw and headers.get("Content-Type", "").startswith("application/json")
                and "/media/" not in path):
            try:
                body = json.loads(raw)
            except ValueError:
                return self._err(400, "M_NOT_JSON", "Content not JSON.")
        with self._cond:
            self.requests.append(Request(method, path, query, body, time.monotonic()))
            for lim in self._limits:
                if lim[0] == method and lim[1] in path and lim[2] > 0:
                    lim[2] -= 1
                    return 429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests",
                                 "retry_after_ms": lim[3]}, {
                        "Retry-After": str(max(1, lim[3] // 1000))}
        if method == "GET" and path == "/_matrix/client/versions":
            return 200, {"versions": ["v1.11"], "unstable_features": {}}, {}
        if method == "POST" and path == f"{CS}/login":
            ok = (body or {}).get("password") == self.password and (
                (body.get("identifier") or {}).get("user") in (self.bot,
                                                                self.bot[1:].split(":")[0]))
            if not ok:
                return self._err(403, "M_FORBIDDEN", "Invalid username or password")
            return 200, {"user_id": self.bot, "access_token": self.token,
                         "device_id": self.device_id}, {}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return self._err(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.",
                             soft_logout=False)
        if method == "GET" and path == f"{CS}/account/whoami":
            return 200, {"user_id": self.bot, "device_id": self.device_id}, {}
        if method == "GET" and path == f"{CS}/sync":
            return self._sync(query)
        parts = path[len(CS):].strip("/").split("/") if path.startswith(CS) else []
        if method == "PUT" and len(parts) == 5 and parts[0] == "rooms" and parts[2] == "send":
            room, etype, txn = parts[1], parts[3], parts[4]
            if room not in self.rooms:
                return self._err(403, "M_FORBIDDEN", "not in room")
            with self._cond:
                key = (room, txn)
                if key not in self._txns:
                    eid = self._event_id()
                    self._txns[key] = eid
                    self.sent.append(Sent(eid, room, etype, body or {}, txn, self.bot))
                    self._log.append((room, {"type": etype, "sender": self.bot,
                                             "event_id": eid, "content": body or {},
                                             "origin_server_ts": int(time.time() * 1000)},
                                      False))
                    self._cond.notify_all()
                return 200, {"event_id": self._txns[key]}, {}
        if method == "PUT" and len(parts) == 5 and parts[0] == "rooms" and parts[2] == "redact":
            room, target = parts[1], parts[3]
            for s in self.sent:
                if s.event_id == target and s.room_id == room:
                    s.redacted = True
                    return 200, {"event_id": self._event_id()}, {}
            return self._err(404, "M_NOT_FOUND", "Event not found")
        if method == "POST" and len(parts) == 2 and parts[0] == "join":
            if parts[1] not in self.rooms:
                return self._err(404, "M_NOT_FOUND", "No known servers")
            return 200, {"room_id": parts[1]}, {}
        if method == "POST" and path == "/_matrix/media/v3/upload":
            n = len(self.uploads)
            self.uploads.append({"filename": (query.get("filename") or [""])[0],
                                 "content_type": headers.get("Content-Type"), "data": raw})
            return 200, {"content_uri": f"mxc://fake.test/upload{n}"}, {}
        return self._err(404, "M_UNRECOGNIZED", f"Unrecognized request {method} {path}")

    def _sync(self, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        since = int((query.get("since") or ["0"])[0] or 0)
        timeout = min(int((query.get("timeout") or ["0"])[0] or 0), 30_000) / 1000
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._log) <= since and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._log[since:]
            nxt = len(self._log)
        join: dict[str, Any] = {}
        for room_id, ev, is_state in batch:
            r = join.setdefault(room_id, {"timeline": {"events": [], "limited": False,
                                                       "prev_batch": f"p{since}"},
                                          "state": {"events": []},
                                          "ephemeral": {"events": []},
                                          "account_data": {"events": []}})
            (r["state"] if is_state else r["timeline"])["events"].append(ev)
        return 200, {"next_batch": str(nxt), "rooms": {"join": join, "invite": {},
                                                        "leave": {}},
                     "presence": {"events": []}, "account_data": {"events": []},
                     "to_device": {"events": []}}, {}


def _is_edit(content: dict[str, Any]) -> bool:
    return (content.get("m.relates_to") or {}).get("rel_type") == "m.replace"
