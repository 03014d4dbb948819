"""A fake Slack: the Web API (``POST /api/<method>``, form or JSON bodies, bearer token,
``{"ok": ...}`` answers, 429 with ``Retry-After``), the file upload URLs of
``files.getUploadURLExternal``, private file downloads; and Slack's side of the Events API and
interactivity: events and button clicks POSTed to the app's request URL, signed with the
signing secret exactly as Slack signs them (``v0=`` HMAC-SHA256 of ``v0:<ts>:<body>``)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.channels.fakehttp import Call, FakePlatform

TEAM = "T0001"
BOT_USER = "UBOT"


class FakeSlack(FakePlatform):
    def __init__(self, token: str, signing_secret: str) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.uploads: dict[str, bytes] = {}
        self.private_files: dict[str, bytes] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/"

    # -- Slack's side of the app's request URL ---------------------------------------------
    def sign(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if ts is None else ts
        sig = hmac.new(self.signing_secret.encode(), f"v0:{ts}:".encode() + body,
                       hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}"}

    def post(self, url: str, body: bytes, content_type: str, *,
             headers: dict[str, str] | None = None) -> httpx.Response:
        h = {"Content-Type": content_type, **(self.sign(body) if headers is None else headers)}
        with httpx.Client(timeout=10, trust_env=False) as c:
            return c.post(url, content=body, headers=h)

    def say(self, url: str, user: str, text: str = "", *, channel: str | None = None,
            channel_type: str = "im", team: str = TEAM, files: list[dict[str, Any]] | None
            = None, event_id: str | None = None, attachments: bool = False
            ) -> httpx.Response:
        """A user posts a message; Slack delivers an ``event_callback`` to the app."""
        n = next(self._ids)
        ev: dict[str, Any] = {"type": "message", "user": user, "text": text,
                              "channel": channel or f"D{user}", "channel_type": channel_type,
                              "ts": f"{time.time():.6f}", "team": team}
        if files:
            ev["files"], ev["subtype"] = files, "file_share"
        if attachments:
            ev["attachments"] = [{"fallback": "forwarded", "text": text}]
        body = json.dumps({"token": "legacy", "team_id": team, "api_app_id": "A1",
                           "type": "event_callback", "event_id": event_id or f"Ev{n}",
                           "event_time": int(time.time()), "event": ev}).encode()
        return self.post(url, body, "application/json")

    def click(self, url: str, user: str, message: dict[str, Any], value: str, *,
              team: str = TEAM, action_id: str = "closedpaw_approve") -> httpx.Response:
        """A user clicks a button of ``message`` (as the app posted it)."""
        payload = {"type": "block_actions", "user": {"id": user, "team_id": team,
                                                      "username": "someone"},
                   "team": {"id": team}, "api_app_id": "A1",
                   "channel": {"id": message["channel"]}, "container": {
                       "type": "message", "message_ts": message["ts"]},
                   "message": {"ts": message["ts"], "text": message.get("text", "")},
                   "response_url": f"{self.url}/respond/{next(self._ids)}",
                   "actions": [{"type": "button", "action_id": action_id,
                                "block_id": "closedpaw_approval", "value": value,
                                "action_ts": f"{time.time():.6f}"}]}
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(url, body, "application/x-www-form-urlencoded")

    # -- what the app did ------------------------------------------------------------------
    def posted(self, channel: str | None = None) -> list[dict[str, Any]]:
        out = [c.fields["_answer"] for c in self.of("chat.postMessage")
               if c.status == 200 and "_answer" in c.fields]
        return [m for m in out if channel is None or m["channel"] == channel]

    def texts(self, channel: str | None = None) -> list[str]:
        return [m["text"] for m in self.posted(channel)]

    # -- the wire ----------------------------------------------------------------------------
    def method_of(self, call: Call) -> str:
        if call.path.startswith("/upload/"):
            return "upload"
        if call.path.startswith("/files/"):
            return "download"
        return call.path.rsplit("/", 1)[-1]

    def too_many(self, method: str) -> tuple[int, dict[str, str], bytes]:
        return 429, {"Content-Type": "application/json", "Retry-After": "1"}, \
            b'{"ok":false,"error":"ratelimited"}'

    @staticmethod
    def _json(v: dict[str, Any], status: int = 200) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json; charset=utf-8"}, \
            json.dumps(v).encode()

    def answer(self, method: str, call: Call) -> tuple[int, dict[str, str], bytes]:
        if method == "upload":
            self.uploads[call.path.rsplit("/", 1)[-1]] = call.raw
            return 200, {"Content-Type": "text/plain"}, f"OK - {len(call.raw)}".encode()
        auth = call.headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return self._json({"ok": False, "error": "invalid_auth"})
        if method == "download":
            data = self.private_files.get(call.path.rsplit("/", 1)[-1])
            return (200, {"Content-Type": "text/plain"}, data) if data is not None else \
                (404, {}, b"not found")
        f = call.fields
        if method == "auth.test":
            return self._json({"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                               "user": "paw", "team_id": TEAM, "user_id": BOT_USER,
                               "bot_id": "B1"})
        if method in ("chat.postMessage", "chat.update"):
            ch = f.get("channel")
            if not ch:
                return self._json({"ok": False, "error": "channel_not_found"})
            blocks = f.get("blocks")
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            ts = f.get("ts") if method == "chat.update" else f"1700000000.{next(self._ts):06d}"
            msg = {"channel": ch, "ts": ts, "text": f.get("text", ""), "blocks": blocks or []}
            if len(msg["text"]) > 40_000:
                return self._json({"ok": False, "error": "msg_too_long"})
            f["_answer"] = msg
            return self._json({"ok": True, "channel": ch, "ts": ts,
                               "message": {"text": msg["text"], "blocks": msg["blocks"]}})
        if method == "conversations.open":
            users = str(f.get("users") or "")
            if not users or "," in users:
                return self._json({"ok": False, "error": "users_list_not_supplied"})
            return self._json({"ok": True, "channel": {"id": f"D{users}"}})
        if method == "chat.postEphemeral":
            return self._json({"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"})
        if method == "files.getUploadURLExternal":
            fid = f"F{next(self._ids):05d}"
            return self._json({"ok": True, "upload_url": f"{self.url}/upload/{fid}",
                               "file_id": fid})
        if method == "files.completeUploadExternal":
            files = f.get("files")
            if isinstance(files, str):
                files = json.loads(files)
            return self._json({"ok": True, "files": [{"id": x["id"], "title": x.get("title")}
                                                     for x in files or []]})
        return self._json({"ok": False, "error": "unknown_method"})
