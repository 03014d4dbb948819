"""A fake Telegram Bot API server: ``POST /bot<TOKEN>/<method>`` with form-encoded (or
multipart, for files) bodies, ``{"ok": true, "result": ...}`` answers, long-polled
``getUpdates``, ``GET /file/bot<TOKEN>/<path>`` downloads, and the real 429 shape
(``{"ok": false, "error_code": 429, "parameters": {"retry_after": N}}``)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from tests.channels.fakehttp import Call, FakePlatform

BOT_ID = 999000


class FakeTelegram(FakePlatform):
    def __init__(self, token: str, *, retry_after: int = 1) -> None:
        self.token = token
        self.retry_after = retry_after
        self.updates: list[dict[str, Any]] = []
        self.files: dict[str, tuple[str, bytes]] = {}   # file_id -> (path, data)
        self._ids = itertools.count(1)
        self._msg_ids = itertools.count(100)
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    # -- what users do -----------------------------------------------------------------------
    def _push(self, kind: str, obj: dict[str, Any]) -> None:
        with self.cond:
            self.updates.append({"update_id": next(self._ids), kind: obj})
            self.cond.notify_all()

    @staticmethod
    def user(uid: int, name: str = "Ann") -> dict[str, Any]:
        return {"id": uid, "is_bot": False, "first_name": name}

    def say(self, uid: int, text: str = "", *, name: str = "Ann", chat: int | None = None,
            chat_type: str = "private", forwarded: bool = False,
            document: tuple[str, bytes] | None = None, caption: str | None = None) -> int:
        """A user sends a message (to the bot's private chat unless ``chat`` is given)."""
        mid = next(self._msg_ids)
        m: dict[str, Any] = {"message_id": mid, "date": int(time.time()),
                             "chat": {"id": chat if chat is not None else uid,
                                      "type": chat_type},
                             "from": self.user(uid, name)}
        if text:
            m["text"] = text
        if caption is not None:
            m["caption"] = caption
        if forwarded:
            m["forward_origin"] = {"type": "hidden_user", "date": int(time.time()),
                                   "sender_user_name": "Someone"}
        if document is not None:
            fid = f"file{mid}"
            self.files[fid] = (f"documents/{document[0]}", document[1])
            m["document"] = {"file_id": fid, "file_unique_id": f"u{fid}",
                             "file_name": document[0], "mime_type": "text/plain",
                             "file_size": len(document[1])}
        self._push("message", m)
        return mid

    def press(self, uid: int, message: dict[str, Any], data: str, *, name: str = "Ann") -> str:
        """A user presses an inline button of ``message`` (as the bot sent it)."""
        qid = f"cq{next(self._ids)}"
        self._push("callback_query", {"id": qid, "from": self.user(uid, name),
                                      "chat_instance": "ci", "data": data,
                                      "message": message})
        return qid

    # -- what the bot did --------------------------------------------------------------------
    def sent(self, chat: int | None = None) -> list[dict[str, Any]]:
        """Messages the bot sent (as the Message objects answered), oldest first."""
        out = []
        for c in self.of("sendMessage") + self.of("sendDocument"):
            if c.status == 200 and (chat is None or int(c.fields["chat_id"]) == chat):
                out.append(c.fields["_answer"])
        return sorted(out, key=lambda m: m["message_id"])

    def texts(self, chat: int | None = None) -> list[str]:
        return [m.get("text", "") for m in self.sent(chat)]

    # -- the wire ----------------------------------------------------------------------------
    def method_of(self, call: Call) -> str:
        if call.path.startswith("/file/"):
            return "file"
        return call.path.rsplit("/", 1)[-1]

    def too_many(self, method: str) -> tuple[int, dict[str, str], bytes]:
        return 429, {"Content-Type": "application/json"}, json.dumps({
            "ok": False, "error_code": 429,
            "description": f"Too Many Requests: retry after {self.retry_after}",
            "parameters": {"retry_after": self.retry_after}}).encode()

    @staticmethod
    def _ok(result: Any) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"ok": True, "result": result}).encode()

    @staticmethod
    def _err(code: int, desc: str) -> tuple[int, dict[str, str], bytes]:
        return code, {"Content-Type": "application/json"}, json.dumps(
            {"ok": False, "error_code": code, "description": desc}).encode()

    def answer(self, method: str, call: Call) -> tuple[int, dict[str, str], bytes]:
        prefix = f"/file/bot{self.token}/" if method == "file" else f"/bot{self.token}/"
        if not call.path.startswith(prefix):
            return self._err(401, "Unauthorized")
        f = call.fields
        if method == "file":
            path = call.path[len(prefix):]
            for p, data in self.files.values():
                if p == path:
                    return 200, {"Content-Type": "application/octet-stream"}, data
            return self._err(404, "Not Found")
        if method == "getMe":
            return self._ok({"id": BOT_ID, "is_bot": True, "first_name": "Paw",
                             "username": "paw_bot", "can_join_groups": True,
                             "can_read_all_group_messages": False,
                             "supports_inline_queries": False})
        if method in ("deleteWebhook", "answerCallbackQuery", "close", "logOut"):
            return self._ok(True)
        if method == "getUpdates":
            return self._ok(self._updates(int(f.get("offset") or 0),
                                          float(f.get("timeout") or 0)))
        if method == "getFile":
            fid = f.get("file_id", "")
            if fid not in self.files:
                return self._err(400, "Bad Request: invalid file_id")
            p, data = self.files[fid]
            return self._ok({"file_id": fid, "file_unique_id": f"u{fid}",
                             "file_size": len(data), "file_path": p})
        if method in ("sendMessage", "sendDocument"):
            try:
                chat = int(f["chat_id"])
            except (KeyError, ValueError):
                return self._err(400, "Bad Request: chat not found")
            text = f.get("text", "")
            if method == "sendMessage" and not (1 <= len(text) <= 4096):
                return self._err(400, "Bad Request: message is too long" if text else
                                 "Bad Request: message text is empty")
            m: dict[str, Any] = {"message_id": next(self._msg_ids), "date": int(time.time()),
                                 "chat": {"id": chat, "type": "private"},
                                 "from": {"id": BOT_ID, "is_bot": True, "first_name": "Paw"}}
            if text:
                m["text"] = text
            if "reply_markup" in f:
                m["reply_markup"] = json.loads(f["reply_markup"])
            if method == "sendDocument":
                if "document" not in call.files:
                    return self._err(400, "Bad Request: there is no document in the request")
                name, data = call.files["document"]
                fid = f"sent{m['message_id']}"
                self.files[fid] = (f"documents/{name}", data)
                m["document"] = {"file_id": fid, "file_unique_id": f"u{fid}",
                                 "file_name": name, "file_size": len(data)}
                if f.get("caption"):
                    m["caption"] = f["caption"]
            f["_answer"] = m
            return self._ok(m)
        if method == "editMessageText":
            text = f.get("text", "")
            m = {"message_id": int(f["message_id"]), "date": int(time.time()),
                 "chat": {"id": int(f["chat_id"]), "type": "private"}, "text": text,
                 "from": {"id": BOT_ID, "is_bot": True, "first_name": "Paw"}}
            if "reply_markup" in f:
                m["reply_markup"] = json.loads(f["reply_markup"])
            f["_answer"] = m
            return self._ok(m)
        return self._err(404, "Not Found: method not found")

    def _updates(self, offset: int, timeout: float) -> list[dict[str, Any]]:
        end = time.monotonic() + min(timeout, 5.0)
        with self.cond:
            while True:
                # like Telegram: an offset confirms (forgets) every update before it
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if self.updates or self.closed:
                    return list(self.updates)
                left = end - time.monotonic()
                if left <= 0:
                    return []
                self.cond.wait(left)
