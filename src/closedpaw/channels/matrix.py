"""Matrix, on matrix-nio: the client-server API of any homeserver (``AsyncClient(homeserver)``),
one bot account, long-poll ``/sync``.

Inbound: a message's sender is the Matrix user id (``@user:server``, immutable; the display
name is a per-room label anyone can set to anything, including an admin's name, and is used
for nothing but labels). Text messages (``m.text``, ``m.notice`` and ``m.emote`` are ignored
from the bot itself), edits of earlier messages are ignored (an edit is not a new request),
messages sent before the channel started are skipped (the first sync only marks the place).
A room with two members (the bot and one person) is a direct chat. Matrix clients keep ``/``
for their own commands, so ``!pair`` is read as ``/pair``.

Approvals: Matrix has no buttons. The card says how to decide, and both ways carry the action
id and the parameters' sha256 exactly like a button:

- reply with the command ``!approve <action id> <sha256>`` (or ``!reject ...``), copied from
  the card; any typo makes a payload the core refuses (and audits);
- or react to the card with ✅ (approve) or ❌ (reject): the reaction names the card's event,
  and the adapter gives the core the payloads that card was posted with.

The core decides (allowlist, the gate's approver rules, the hash); the outcome is edited into
the card (an ``m.replace`` edit); the answer to the presser is a notice in the room (Matrix
has no private reply), at most ``ACK_BURST`` per person per ``ACK_INTERVAL_S``, so a stranger
cannot make the bot talk much. Outbound text is ``m.notice`` (the convention for bots: other
bots do not answer it), at most ``max_chars`` characters per event (Matrix caps an event at
64 KiB). nio honours ``429 M_LIMIT_EXCEEDED`` itself (it sleeps ``retry_after_ms`` and
retries, up to ``max_limit_exceeded`` times); one still there after that is
:class:`~closedpaw.channels.base.RateLimited`. Other errors are
:class:`~closedpaw.errors.ChannelError` from one table.

The token is an access token of the bot account (``secret:NAME``); options: ``homeserver``
(URL) and ``user_id`` (required), ``sync_timeout_ms``. The account must already be a member of
the rooms it serves (invite it and accept with any client); it joins nothing by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from nio import (  # type: ignore[import-untyped]  # matrix-nio ships no type hints
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    MatrixRoom,
    ReactionEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
    WhoamiResponse,
)

from closedpaw.channels.base import (
    Adapter,
    ApprovalCard,
    ApprovalPayload,
    ButtonPress,
    Handler,
    Identity,
    Inbound,
    RateLimited,
    Verb,
)
from closedpaw.errors import ChannelError

if TYPE_CHECKING:
    from closedpaw.settings import ChannelConfig

__all__ = ["ACK_BURST", "ACK_INTERVAL_S", "APPROVE_REACTIONS", "REJECT_REACTIONS",
           "MatrixAdapter"]

log = logging.getLogger("closedpaw.channels.matrix")

APPROVE_REACTIONS = ("✅", "✔️", "👍")
REJECT_REACTIONS = ("❌", "✖️", "👎")
#: at most ACK_BURST notices to one presser per ACK_INTERVAL_S (Matrix has no private answer)
ACK_INTERVAL_S = 30.0
ACK_BURST = 3
_MAX_CARDS = 1000
#: at stop, how long handlers and requests under way may take to finish (each), seconds
STOP_DRAIN_S = 5.0

#: Matrix error codes -> what to do (first match wins; the default last)
_ERRORS: list[tuple[str, str]] = [
    ("M_UNKNOWN_TOKEN", "the homeserver refused the access token: store a valid one with "
                        "'closedpaw secret set NAME' (log the bot in once and copy its token)"),
    ("M_MISSING_TOKEN", "the homeserver wants an access token"),
    ("M_FORBIDDEN", "the homeserver refused: the bot is not in that room or may not post"),
    ("M_NOT_FOUND", "the homeserver does not know that room or event"),
    ("M_TOO_LARGE", "the event is too large for the homeserver"),
    ("", "the homeserver answered with an error"),
]


def _raise(resp: Any, what: str) -> None:
    """Map an nio error response; a rate limit left over after nio's retries -> RateLimited."""
    if not isinstance(resp, ErrorResponse):
        return
    code = str(resp.status_code or "")
    if code in ("M_LIMIT_EXCEEDED", "429"):
        raise RateLimited((resp.retry_after_ms or 1000) / 1000, "matrix")
    for prefix, text in _ERRORS:
        if code.startswith(prefix):
            raise ChannelError(f"matrix {what}: {text} ({code}: "
                               f"{' '.join(str(resp.message).split())[:200]})")


class MatrixAdapter(Adapter):
    platform = "matrix"
    #: characters per message: far below the 64 KiB event cap even for 4-byte characters
    max_chars = 8000

    def __init__(self, name: str, token: str, *, homeserver: str, user_id: str,
                 sync_timeout_ms: int = 30_000, max_limit_exceeded: int = 3) -> None:
        super().__init__(name)
        if not homeserver.startswith(("https://", "http://")):
            raise ChannelError(f"matrix channel {name}: homeserver must be an http(s) URL")
        try:
            Identity("matrix", user_id)
        except ValueError:
            raise ChannelError(f"matrix channel {name}: user_id {user_id!r} is not a Matrix "
                               "user id (@name:server)") from None
        if not user_id.startswith("@") or ":" not in user_id:
            raise ChannelError(f"matrix channel {name}: user_id must look like @name:server")
        self._token = token
        self.homeserver = homeserver.rstrip("/")
        self.user_id = user_id
        self.sync_timeout_ms = sync_timeout_ms
        self.max_limit_exceeded = max_limit_exceeded
        self.client: AsyncClient | None = None
        self._handler: Handler | None = None
        self._sync: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cards: OrderedDict[str, ApprovalCard] = OrderedDict()   # event id -> card
        self._card_of: dict[str, str] = {}                           # action id -> event id
        self._acked: dict[str, list[float]] = {}
        self.since: str | None = None
        self._stopping = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def from_config(cls, config: ChannelConfig, secret: Callable[[str], str]) -> MatrixAdapter:
        o = dict(config.options)
        unknown = set(o) - {"homeserver", "user_id", "sync_timeout_ms"}
        if unknown:
            raise ChannelError(f"channel {config.name}: unknown matrix option(s) "
                               f"{sorted(unknown)}; known: homeserver, user_id, "
                               "sync_timeout_ms")
        for need in ("homeserver", "user_id"):
            if not isinstance(o.get(need), str) or not o[need]:
                raise ChannelError(f"channel {config.name}: the matrix option {need} is "
                                   "required")
        try:
            timeout = int(o.get("sync_timeout_ms", 30_000))
        except (TypeError, ValueError):
            raise ChannelError(f"channel {config.name}: sync_timeout_ms is a number") from None
        if not 0 <= timeout <= 120_000:
            raise ChannelError(f"channel {config.name}: sync_timeout_ms: 0 to 120000")
        return cls(config.name, secret(config.token_secret), homeserver=o["homeserver"],
                   user_id=o["user_id"], sync_timeout_ms=timeout)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        self._handler = handler
        client = AsyncClient(self.homeserver, self.user_id, config=AsyncClientConfig(
            max_limit_exceeded=self.max_limit_exceeded, max_timeouts=3,
            encryption_enabled=False, store_sync_tokens=False))
        client.access_token = self._token
        client.user_id = self.user_id
        self.client = client
        try:
            who = await self._req(client.whoami, "whoami")
            if not isinstance(who, WhoamiResponse) or who.user_id != self.user_id:
                raise ChannelError(f"matrix channel {self.name}: the token belongs to "
                                   f"{getattr(who, 'user_id', None)!r}, not {self.user_id}")
            first = await self._req(lambda: client.sync(timeout=0, full_state=True), "sync")
            if not isinstance(first, SyncResponse):
                raise ChannelError(f"matrix channel {self.name}: the first sync failed")
            self.since = first.next_batch   # what was said before we started is not answered
        except BaseException:
            await client.close()
            self.client = None
            raise
        self._sync = asyncio.create_task(self._sync_loop(client))

    async def _req(self, fn: Callable[[], Any], what: str) -> Any:
        self._inflight += 1
        self._idle.clear()
        try:
            resp = await fn()
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ChannelError(f"matrix {what}: the homeserver {self.homeserver} is "
                               f"unreachable ({type(e).__name__}: {e})") from None
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
        _raise(resp, what)
        return resp

    async def stop(self) -> None:
        """Stop syncing, let the handlers and requests under way finish (a few seconds at
        most, then they are cancelled), close the session. A request cut off by a closing
        event loop would leave its connection open: this drains them first."""
        self._stopping = True
        task, self._sync = self._sync, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_DRAIN_S)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), STOP_DRAIN_S)
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _sync_loop(self, client: AsyncClient) -> None:
        pause = 1.0
        while True:
            try:
                resp = await self._req(lambda: client.sync(
                    timeout=self.sync_timeout_ms, since=self.since), "sync")
            except asyncio.CancelledError:
                raise
            except RateLimited as e:
                await asyncio.sleep(max(0.05, e.retry_after))
                continue
            except Exception as e:
                log.error("matrix channel %s: sync failed: %s (retrying in %.0f s)",
                          self.name, e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)
                continue
            pause = 1.0
            if not isinstance(resp, SyncResponse):
                continue
            self.since = resp.next_batch
            for room_id, info in resp.rooms.join.items():
                room = client.rooms.get(room_id)
                if room is None:
                    continue
                for ev in info.timeline.events:
                    self._spawn(self._event(room, ev))

    def _spawn(self, coro: Any) -> None:
        """Each event is handled in a task of its own (a turn may wait for a model)."""
        t: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(t)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("matrix channel %s: handling an event failed: %r", self.name,
                          task.exception())
        t.add_done_callback(done)

    # -- inbound ---------------------------------------------------------------------------
    def identity(self, room: MatrixRoom, sender: str) -> Identity:
        """The user id decides; the room display name only labels."""
        return Identity("matrix", sender, display_name=room.user_name(sender) or "")

    async def _event(self, room: MatrixRoom, ev: Any) -> None:
        h = self._handler
        if h is None or getattr(ev, "sender", None) in (None, self.user_id):
            return
        try:
            who = self.identity(room, ev.sender)
        except ValueError:
            return
        if isinstance(ev, ReactionEvent):
            card = self._cards.get(ev.reacts_to)
            if card is None:
                return
            key = ev.key.replace("\ufe0f", "")
            if key in {k.replace("\ufe0f", "") for k in APPROVE_REACTIONS}:
                payload = card.approve
            elif key in {k.replace("\ufe0f", "") for k in REJECT_REACTIONS}:
                payload = card.reject
            else:
                return
            await h.on_button(ButtonPress(who, room.room_id, ev.reacts_to, payload,
                                          ack_token=ev.sender))
            return
        if not isinstance(ev, RoomMessageText):
            return
        rel = (ev.source.get("content") or {}).get("m.relates_to") or {}
        if rel.get("rel_type") == "m.replace":
            return
        text = ev.body or ""
        words = text.strip().split()
        if words[:1] in (["!approve"], ["!reject"]):
            await h.on_button(self._command(who, room.room_id, words))
            return
        if words[:1] == ["!pair"]:
            text = "/pair" + text.strip()[len("!pair"):]
        direct = room.member_count == 2
        await h.on_message(Inbound(who, room.room_id, text, message_id=ev.event_id,
                                   direct=direct))

    def _command(self, who: Identity, room_id: str, words: list[str]) -> ButtonPress:
        """``!approve <id> <sha256>`` as the press of the button that carries exactly those:
        a malformed command becomes a payload the core refuses (and audits)."""
        verb: Verb = "approve" if words[0] == "!approve" else "reject"
        payload = " ".join(words)[:200]
        aid = words[1] if len(words) > 1 else ""
        if len(words) == 3:
            with contextlib.suppress(ValueError):
                payload = ApprovalPayload(aid, words[2].lower(), verb).encode()
        return ButtonPress(who, room_id, self._card_of.get(aid, ""), payload,
                           ack_token=who.user_id)

    # -- outbound --------------------------------------------------------------------------
    def _client(self) -> AsyncClient:
        if self.client is None:
            raise ChannelError(f"matrix channel {self.name} is not running")
        return self.client

    async def _send(self, room_id: str, content: dict[str, Any]) -> str:
        client = self._client()
        resp = await self._req(lambda: client.room_send(room_id, "m.room.message", content,
                                                        ignore_unverified_devices=True),
                               "send")
        if not isinstance(resp, RoomSendResponse):
            raise ChannelError(f"matrix send: unexpected answer {type(resp).__name__}")
        return str(resp.event_id)

    async def send_text(self, chat_id: str, text: str) -> str:
        return await self._send(chat_id, {"msgtype": "m.notice",
                                          "body": text[:self.max_chars]})

    def _card_text(self, card: ApprovalCard) -> str:
        text = card.text()
        if card.outcome is None:
            text += (f"\n\nTo decide, react to this message with ✅ (approve) or ❌ (reject), "
                     f"or send:\n!approve {card.action_id} {card.params_sha256}\n"
                     f"!reject {card.action_id} {card.params_sha256}")
        if len(text) > self.max_chars:
            text = text[:self.max_chars - 40] + "\n[... cut: see the file]"
        return text

    async def send_approval(self, chat_id: str, card: ApprovalCard) -> str:
        eid = await self._send(chat_id, {"msgtype": "m.notice", "body": self._card_text(card)})
        self._cards[eid] = card
        self._card_of[card.action_id] = eid
        while len(self._cards) > _MAX_CARDS:
            _old, c = self._cards.popitem(last=False)
            self._card_of.pop(c.action_id, None)
        return eid

    async def edit_approval(self, chat_id: str, message_id: str, card: ApprovalCard) -> None:
        text = self._card_text(card)
        await self._send(chat_id, {
            "msgtype": "m.notice", "body": f"* {text}",
            "m.new_content": {"msgtype": "m.notice", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": message_id}})
        # decided: reactions and commands on the card no longer mean anything here
        self._cards.pop(message_id, None)

    async def send_file(self, chat_id: str, filename: str, data: bytes, caption: str = ""
                        ) -> str:
        client = self._client()
        mime = "application/json" if filename.endswith(".json") else "application/octet-stream"

        async def upload() -> Any:
            resp, _keys = await client.upload(io.BytesIO(data), content_type=mime,
                                              filename=filename, filesize=len(data))
            return resp
        up = await self._req(upload, "upload")
        if not isinstance(up, UploadResponse):
            raise ChannelError(f"matrix upload: unexpected answer {type(up).__name__}")
        return await self._send(chat_id, {
            "msgtype": "m.file", "body": caption[:self.max_chars] or filename,
            "filename": filename, "url": up.content_uri,
            "info": {"size": len(data), "mimetype": mime}})

    async def ack(self, press: ButtonPress, text: str) -> None:
        """A notice in the room naming the presser, at most ``ACK_BURST`` per person per
        ``ACK_INTERVAL_S`` (the rest are not sent: the core has audited them)."""
        now = time.monotonic()
        if len(self._acked) > 10_000:
            self._acked = {k: v for k, v in self._acked.items()
                           if v and now - v[-1] < ACK_INTERVAL_S}
        recent = [t for t in self._acked.get(press.identity.user_id, [])
                  if now - t < ACK_INTERVAL_S]
        if len(recent) >= ACK_BURST:
            return
        self._acked[press.identity.user_id] = [*recent, now]
        await self.send_text(press.chat_id, f"{press.identity.user_id}: {text}"[:500])

    async def direct_chat(self, who: Identity) -> str:
        """The room the bot shares with ``who`` alone (the bot creates none: a person who
        wants messages from it invites it to a direct chat first)."""
        client = self._client()
        for room in client.rooms.values():
            if set(room.users) == {self.user_id, who.user_id}:
                return str(room.room_id)
        raise ChannelError(f"matrix channel {self.name}: no direct room with {who.user_id} "
                           "(they invite the bot to a direct chat, and the bot's account "
                           "accepts it)")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "platform": self.platform, "user_id": self.user_id,
                "homeserver": self.homeserver}
