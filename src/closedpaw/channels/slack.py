"""Slack, on slack_sdk (the official SDK): the Web API through ``WebClient(base_url=...)``
(``https://slack.com/api/`` by default; note the trailing slash) and Slack's Events API and
interactivity requests received on a small HTTP listener of our own (``listen_host`` /
``listen_port`` options; put it behind the HTTPS reverse proxy Slack's request URL points at).

Every inbound request must carry a valid ``X-Slack-Signature`` over the raw body made with the
app's signing secret (``signing_secret: secret:NAME``) and a timestamp within five minutes
(slack_sdk's ``SignatureVerifier``): anything else gets 401 and is never parsed further. Each
request is answered at once (Slack wants an answer within 3 s) and handled after; an event
Slack sends again (same ``event_id``) is handled once.

A sender is ``(team id, user id)``: a Slack user id is unique within its workspace only.
Messages from bots (ours included) and edits are ignored. Outgoing text is escaped (``&``,
``<``, ``>``) so model output cannot ping ``@channel`` or hide a link; cards use plain-text
blocks and two buttons whose ``value`` is the approval payload. A 429 (``Retry-After``) becomes
:class:`~closedpaw.channels.base.RateLimited`; other API errors map to :class:`ChannelError`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier

from closedpaw.channels.base import (
    Adapter,
    ApprovalCard,
    ButtonPress,
    Handler,
    Identity,
    Inbound,
    InboundFile,
    RateLimited,
)
from closedpaw.errors import ChannelError

if TYPE_CHECKING:
    from closedpaw.settings import ChannelConfig

__all__ = ["DEFAULT_BASE_URL", "MAX_BODY_BYTES", "SlackAdapter", "escape"]

log = logging.getLogger("closedpaw.channels.slack")
T = TypeVar("T")

DEFAULT_BASE_URL = "https://slack.com/api/"
MAX_BODY_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 20
APPROVE_ID, REJECT_ID = "closedpaw_approve", "closedpaw_reject"

#: Slack error strings -> what to do (the rest: "Slack answered <error>")
_ERRORS = {
    "invalid_auth": "Slack refused the bot token: store the right one (xoxb-...) with "
                    "'closedpaw secret set NAME'",
    "not_authed": "no bot token was sent",
    "account_inactive": "the bot token belongs to a deactivated app or workspace",
    "token_revoked": "the bot token was revoked: install the app again",
    "channel_not_found": "the bot cannot see that channel (invite it there)",
    "not_in_channel": "the bot is not in that channel (invite it there)",
    "missing_scope": "the app lacks an OAuth scope it needs (chat:write, files:write...)",
}


def escape(text: str) -> str:
    """Slack's three control characters, so text shows as typed and pings no one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _retry_after(e: SlackApiError) -> float:
    headers = {k.lower(): v for k, v in (e.response.headers or {}).items()}
    raw = headers.get("retry-after")
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        return float(raw) if raw is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def _mapped(e: Exception) -> Exception:
    if isinstance(e, SlackApiError):
        if e.response.status_code == 429 or e.response.get("error") == "ratelimited":
            return RateLimited(_retry_after(e), "slack")
        code = str(e.response.get("error") or e.response.status_code)
        return ChannelError(f"{_ERRORS.get(code, 'Slack answered an error')} ({code})")
    return ChannelError(f"Slack is unreachable (network, or the base_url option is wrong): "
                        f"{' '.join(str(e).split())[:200]}")


class SlackAdapter(Adapter):
    platform = "slack"
    max_chars = 3500

    def __init__(self, name: str, token: str, signing_secret: str, *,
                 base_url: str = DEFAULT_BASE_URL, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, timeout_s: int = 30) -> None:
        super().__init__(name)
        if not base_url.endswith("/"):
            base_url += "/"   # WebClient joins method names onto it
        self.base_url = base_url
        self.client = WebClient(token=token, base_url=base_url, timeout=timeout_s)
        self._token = token
        self.verifier = SignatureVerifier(signing_secret)
        self.listen_host, self.listen_port = listen_host, listen_port
        self.team_id = ""
        self.bot_user_id = ""
        self._handler: Handler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seen_lock = threading.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()

    @classmethod
    def from_config(cls, config: ChannelConfig, secret: Callable[[str], str]) -> SlackAdapter:
        o = dict(config.options)
        unknown = set(o) - {"base_url", "signing_secret", "listen_host", "listen_port"}
        if unknown:
            raise ChannelError(f"channel {config.name}: unknown slack option(s) "
                               f"{sorted(unknown)}")
        ss = o.get("signing_secret")
        if not isinstance(ss, str) or not ss.startswith("secret:"):
            raise ChannelError(f"channel {config.name}: options.signing_secret: "
                               "'secret:NAME' (the app's signing secret) is required")
        return cls(config.name, secret(config.token_secret), secret(ss.split(":", 1)[1]),
                   base_url=str(o.get("base_url") or DEFAULT_BASE_URL),
                   listen_host=str(o.get("listen_host", "127.0.0.1")),
                   listen_port=int(o.get("listen_port", 8766)))

    @property
    def url(self) -> str:
        """Where Slack's request URL must lead (events and interactivity alike)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.listen_port}/slack/events"

    async def _api(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except (SlackApiError, SlackClientError, OSError) as e:
            raise _mapped(e) from None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        auth = await self._api(self.client.auth_test)
        self.team_id = str(auth.get("team_id") or "")
        self.bot_user_id = str(auth.get("user_id") or "")
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10   # a client that stalls (headers or body) is dropped after 10 s

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                status, body = outer._receive(self)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class S(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                log.debug("slack listener: a client broke its request")

        self._httpd = S((self.listen_host, self.listen_port), H)
        self.listen_port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name=f"closedpaw-slack-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for t in list(self._tasks):
            t.cancel()
        self._handler = None

    # -- inbound ---------------------------------------------------------------------------
    def _receive(self, req: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        """Verify, parse, schedule; returns (status, JSON body). Runs in a listener thread."""
        if urlsplit(req.path).path != "/slack/events":
            return 404, b'{"error":"not_found"}'
        try:
            n = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            return 400, b'{"error":"bad_length"}'
        if n <= 0 or n > MAX_BODY_BYTES:
            return 413, b'{"error":"too_large"}'
        raw = req.rfile.read(n)
        if not self.verifier.is_valid_request(raw, {k: v for k, v in req.headers.items()}):
            log.warning("slack channel %s: a request without a valid signature was refused",
                        self.name)
            return 401, b'{"error":"invalid_signature"}'
        try:
            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype == "application/x-www-form-urlencoded":
                payload = json.loads(parse_qs(raw.decode())["payload"][0])
            else:
                payload = json.loads(raw)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return 400, b'{"error":"bad_body"}'
        if not isinstance(payload, dict):
            return 400, b'{"error":"bad_body"}'
        kind = payload.get("type")
        if kind == "url_verification":
            return 200, json.dumps({"challenge": str(payload.get("challenge", ""))}).encode()
        if kind == "event_callback":
            eid = str(payload.get("event_id") or "")
            if eid and not self._first(eid):
                return 200, b"{}"
            self._schedule(self._event(payload))
        elif kind == "block_actions":
            self._schedule(self._action(payload))
        return 200, b"{}"

    def _first(self, event_id: str) -> bool:
        with self._seen_lock:
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
            return True

    def _schedule(self, coro: Any) -> None:
        loop = self._loop
        if loop is None:
            coro.close()
            return
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        self._tasks.add(fut)  # type: ignore[arg-type]
        fut.add_done_callback(self._done)

    def _done(self, fut: Any) -> None:
        self._tasks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("slack channel %s: handling a request failed: %s", self.name,
                      fut.exception())

    async def _event(self, payload: dict[str, Any]) -> None:
        ev = payload.get("event")
        h = self._handler
        if not isinstance(ev, dict) or h is None or ev.get("type") != "message":
            return
        if ev.get("bot_id") or ev.get("subtype") not in (None, "file_share") \
                or not ev.get("user") or ev.get("user") == self.bot_user_id:
            return
        team = str(ev.get("team") or payload.get("team_id") or "")
        try:
            who = Identity("slack", str(ev["user"]), team)
        except ValueError:
            return
        files = await self._files(ev.get("files"))
        text = str(ev.get("text") or "")
        if not text and not files:
            return
        await h.on_message(Inbound(who, str(ev.get("channel") or ""), text,
                                   message_id=str(ev.get("ts") or ""),
                                   direct=ev.get("channel_type") == "im",
                                   forwarded=bool(ev.get("attachments")), files=files))

    async def _files(self, files: Any) -> tuple[InboundFile, ...]:
        if not isinstance(files, list):
            return ()
        out = []
        for f in files[:5]:
            if not isinstance(f, dict):
                continue
            name = str(f.get("name") or "file")[:200]
            size = f.get("size")
            if isinstance(size, int) and size > MAX_FILE_BYTES:
                out.append(InboundFile(name, f"[a file of {size} bytes, over the "
                                             f"{MAX_FILE_BYTES}-byte limit: not read]"))
                continue
            out.append(InboundFile(name, await self._download(str(f.get("url_private") or ""))))
        return tuple(out)

    async def _download(self, url: str) -> str:
        """A file's text. The bot token is sent only to Slack's own hosts (the API's host or
        files.slack.com), never to a URL an event names elsewhere."""
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme not in ("http", "https") or host not in (
                urlsplit(self.base_url).hostname, "files.slack.com"):
            return "[the file is not on Slack's own host: not downloaded]"
        import httpx

        def get() -> bytes:
            with httpx.Client(timeout=30, trust_env=False, follow_redirects=False) as c, \
                    c.stream("GET", url, headers={"Authorization": f"Bearer {self._token}"}
                             ) as r:
                if r.status_code != 200:
                    raise ChannelError(f"download answered {r.status_code}")
                buf = b""
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > MAX_FILE_BYTES:
                        break
                return buf[:MAX_FILE_BYTES]
        try:
            data = await asyncio.to_thread(get)
        except (ChannelError, OSError, httpx.HTTPError) as e:
            return f"[the file could not be downloaded: {e}]"
        return data.decode("utf-8", "replace")

    async def _action(self, payload: dict[str, Any]) -> None:
        h = self._handler
        user, chan, msg = payload.get("user"), payload.get("channel"), payload.get("message")
        actions = payload.get("actions")
        if h is None or not isinstance(user, dict) or not isinstance(actions, list) \
                or not actions or not isinstance(actions[0], dict):
            return
        team = payload.get("team") if isinstance(payload.get("team"), dict) else {}
        try:
            who = Identity("slack", str(user.get("id") or ""),
                           str(user.get("team_id") or (team or {}).get("id") or ""))
        except ValueError:
            return
        chat = str(chan.get("id") or "") if isinstance(chan, dict) else ""
        ts = str(msg.get("ts") or "") if isinstance(msg, dict) else ""
        await h.on_button(ButtonPress(who, chat, ts, str(actions[0].get("value") or ""),
                                      ack_token=who.user_id))

    # -- outbound --------------------------------------------------------------------------
    async def send_text(self, chat_id: str, text: str) -> str:
        r = await self._api(lambda: self.client.chat_postMessage(
            channel=chat_id, text=escape(text), unfurl_links=False, unfurl_media=False))
        return str(r.get("ts") or "")

    @staticmethod
    def _blocks(card: ApprovalCard, buttons: bool) -> list[dict[str, Any]]:
        text = card.text()
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "plain_text", "text": part}}
            for part in [text[i:i + 2900] for i in range(0, min(len(text), 2900 * 8), 2900)]]
        if buttons:
            blocks.append({"type": "actions", "block_id": "closedpaw_approval", "elements": [
                {"type": "button", "action_id": APPROVE_ID, "style": "primary",
                 "text": {"type": "plain_text", "text": f"Approve ({card.level})"},
                 "value": card.approve},
                {"type": "button", "action_id": REJECT_ID, "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject"}, "value": card.reject}]})
        return blocks

    async def send_approval(self, chat_id: str, card: ApprovalCard) -> str:
        r = await self._api(lambda: self.client.chat_postMessage(
            channel=chat_id, text=escape(f"Approval needed: {card.level} action "
                                         f"{card.action_id}"),
            blocks=self._blocks(card, True)))
        return str(r.get("ts") or "")

    async def edit_approval(self, chat_id: str, message_id: str, card: ApprovalCard) -> None:
        await self._api(lambda: self.client.chat_update(
            channel=chat_id, ts=message_id, text=escape(f"{card.level} action "
                                                        f"{card.action_id}: {card.outcome}"),
            blocks=self._blocks(card, False)))

    async def send_file(self, chat_id: str, filename: str, data: bytes, caption: str = ""
                        ) -> str:
        r = await self._api(lambda: self.client.files_upload_v2(
            channel=chat_id, content=data, filename=filename, title=filename,
            initial_comment=escape(caption) or None))
        f = r.get("file") or {}
        return str(f.get("id") or "") if isinstance(f, dict) else ""

    async def direct_chat(self, who: Identity) -> str:
        """The id of the direct-message conversation with ``who`` (conversations.open)."""
        r = await self._api(lambda: self.client.conversations_open(users=who.user_id))
        ch = r.get("channel")
        if not isinstance(ch, dict) or not ch.get("id"):
            raise ChannelError("Slack did not open a direct conversation")
        return str(ch["id"])

    async def ack(self, press: ButtonPress, text: str) -> None:
        if not press.chat_id or not press.ack_token:
            return
        await self._api(lambda: self.client.chat_postEphemeral(
            channel=press.chat_id, user=press.ack_token, text=escape(text)))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "platform": self.platform, "team": self.team_id,
                "bot_user": self.bot_user_id, "base_url": self.base_url,
                "request_url": self.url if self._httpd is not None else None}

