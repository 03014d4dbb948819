"""Discord, on discord.py: the gateway (websocket) for messages and button presses, the REST API
for everything the bot posts.

Inbound: a message's sender is ``author.id``, the user's snowflake (immutable; the username
and display name are for humans only and can be changed at will); in a direct message every
message is for the bot, in a server channel only messages that mention the bot (the mention is
removed from the text). A text attachment of at most ``MAX_FILE_BYTES`` is read and passed on;
a forwarded message (``message_snapshots``) is marked and its text passed on. A press of one of
our buttons (an interaction of type component) is a
:class:`~closedpaw.channels.base.ButtonPress` of its ``custom_id``, which is exactly the
:class:`~closedpaw.channels.base.ApprovalPayload` (action id + sha256, 61 bytes; Discord allows
100). The press is answered with an ephemeral message only the presser sees (:meth:`ack`).

Outbound: messages of at most 2000 characters; an approval card is a message with two buttons
(Approve: green, Reject: red) whose ``custom_id`` carry the payloads; its outcome is an edit of
that message with the buttons removed; files as attachments. discord.py honours a 429 itself
(it sleeps the ``retry_after`` Discord sends and retries, when that is at most
``max_ratelimit_timeout_s``, 30 s by default, which is also discord.py's floor);
a longer demand, or a 429 still there after its retries, becomes
:class:`~closedpaw.channels.base.RateLimited` for :func:`~closedpaw.channels.base.with_backoff`;
other API errors are :class:`~closedpaw.errors.ChannelError` from one table.

The option ``api_base`` points discord.py's REST routes elsewhere (``discord.http.Route.BASE``
is one value for the whole process: every Discord channel of a server shares it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

with warnings.catch_warnings():   # discord.py imports the deprecated stdlib audioop (voice)
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    import discord.http

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

__all__ = ["DEFAULT_API_BASE", "MAX_FILE_BYTES", "DiscordAdapter"]

log = logging.getLogger("closedpaw.channels.discord")
T = TypeVar("T")

DEFAULT_API_BASE = "https://discord.com/api/v10"
MAX_FILE_BYTES = 1 << 20
#: at stop, how long the handlers under way may take to finish, seconds
STOP_DRAIN_S = 5.0
#: button presses waiting for their answer (Discord wants one within 3 s); older ones dropped
_MAX_OPEN_PRESSES = 1000

#: the library's errors -> ours, with what to do (first match wins)
_ERRORS: list[tuple[type[BaseException], str]] = [
    (discord.LoginFailure, "Discord refused the bot token: store the right one with "
                           "'closedpaw secret set NAME' (Developer Portal, Bot, Reset Token)"),
    (discord.Forbidden, "Discord refused: the bot lacks a permission in that channel, or the "
                        "user does not accept direct messages from it"),
    (discord.NotFound, "Discord does not know that channel, message or user"),
    (discord.DiscordServerError, "Discord answered with a server error; try again later"),
    (discord.HTTPException, "Discord refused the request"),
    (aiohttp.ClientError, "Discord is unreachable (network, or the api_base option is wrong)"),
    (OSError, "Discord is unreachable (network, or the api_base option is wrong)"),
]


def _retry_after(e: discord.HTTPException) -> float:
    text = getattr(e, "text", "") or ""
    resp = getattr(e, "response", None)
    header = resp.headers.get("Retry-After") if resp is not None else None
    for v in (header, _json_retry(text)):
        with contextlib.suppress(TypeError, ValueError):
            if v is not None:
                return float(v)
    return 1.0


def _json_retry(text: str) -> Any:
    import json

    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(text).get("retry_after")
    return None


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    """One REST call with the library's errors mapped (429 left over -> RateLimited)."""
    try:
        return await fn()
    except discord.RateLimited as e:      # longer than max_ratelimit_timeout
        raise RateLimited(e.retry_after, "discord") from None
    except discord.HTTPException as e:
        if e.status == 429:
            raise RateLimited(_retry_after(e), "discord") from None
        detail = f"{e.status} {e.code}: {' '.join(str(e.text).split())[:200]}"
        for kind, text in _ERRORS:
            if isinstance(e, kind):
                raise ChannelError(f"{text} ({detail})") from None
        raise  # pragma: no cover - HTTPException is in the table
    except (discord.LoginFailure, aiohttp.ClientError, OSError) as e:
        for kind, text in _ERRORS:
            if isinstance(e, kind):
                raise ChannelError(f"{text}: {' '.join(str(e).split())[:200]}") from None
        raise  # pragma: no cover


class _Buttons(discord.ui.View):
    """The card's two buttons. Never stored in discord.py's view store (stopped before it is
    sent): a press arrives as an ``interaction`` event and goes to the core like every other
    press, so the decision is the gate's, not a callback's."""

    def __init__(self, card: ApprovalCard) -> None:
        super().__init__(timeout=None)
        self.add_item(discord.ui.Button(label=f"Approve ({card.level})",
                                        style=discord.ButtonStyle.success,
                                        custom_id=card.approve))
        self.add_item(discord.ui.Button(label="Reject", style=discord.ButtonStyle.danger,
                                        custom_id=card.reject))
        self.stop()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 40] + "\n[... cut: see the file]"


class DiscordAdapter(Adapter):
    platform = "discord"
    max_chars = 2000

    def __init__(self, name: str, token: str, *, api_base: str = DEFAULT_API_BASE,
                 gateway: bool = True, max_ratelimit_timeout_s: float = 30.0) -> None:
        """``gateway=False`` logs in over REST only and opens no websocket: events are then
        delivered by whoever calls discord.py's parsers on :attr:`client` (a test, or a
        gateway proxy); with ``True`` (the default) :meth:`start` connects to Discord's
        gateway."""
        super().__init__(name)
        self._token = token
        self.api_base = api_base.rstrip("/")
        self.gateway = gateway
        self.max_ratelimit_timeout_s = max_ratelimit_timeout_s
        self.client: discord.Client | None = None
        self._handler: Handler | None = None
        self._conn: asyncio.Task[None] | None = None
        self._presses: OrderedDict[str, discord.Interaction[Any]] = OrderedDict()
        self._handling: set[asyncio.Task[Any]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.bot_id = ""

    @classmethod
    def from_config(cls, config: ChannelConfig, secret: Callable[[str], str]) -> DiscordAdapter:
        o = dict(config.options)
        unknown = set(o) - {"api_base", "max_ratelimit_timeout_s"}
        if unknown:
            raise ChannelError(f"channel {config.name}: unknown discord option(s) "
                               f"{sorted(unknown)}; known: api_base, max_ratelimit_timeout_s")
        try:
            wait = float(o.get("max_ratelimit_timeout_s", 30.0))
        except (TypeError, ValueError):
            raise ChannelError(f"channel {config.name}: max_ratelimit_timeout_s is a number "
                               "of seconds") from None
        if not 30.0 <= wait <= 300.0:   # discord.py's own floor is 30 s
            raise ChannelError(f"channel {config.name}: max_ratelimit_timeout_s: 30 to 300")
        return cls(config.name, secret(config.token_secret),
                   api_base=str(o.get("api_base") or DEFAULT_API_BASE),
                   max_ratelimit_timeout_s=wait)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        self._handler = handler
        if not self.api_base.startswith(("https://", "http://")):
            raise ChannelError(f"discord channel {self.name}: api_base must be an http(s) URL")
        discord.http.Route.BASE = self.api_base
        intents = discord.Intents.none()
        intents.guilds = True
        intents.dm_messages = True
        intents.guild_messages = True
        intents.message_content = True
        client = discord.Client(intents=intents,
                                max_ratelimit_timeout=self.max_ratelimit_timeout_s)
        client.event(self.on_message)
        client.event(self.on_interaction)
        self.client = client
        try:
            await _call(lambda: client.login(self._token))   # GET /users/@me: token checked
        except BaseException:
            await client.close()
            self.client = None
            raise
        assert client.user is not None
        self.bot_id = str(client.user.id)
        if self.gateway:
            self._conn = asyncio.create_task(self._connect(client))

    async def _connect(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("discord channel %s: the gateway connection ended: %s", self.name, e)

    async def stop(self) -> None:
        """Stop the gateway, let the handlers and REST calls under way finish
        (``STOP_DRAIN_S`` at most, then handlers are cancelled), close the REST session."""
        self._handler = None   # nothing new starts
        task, self._conn = self._conn, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        busy = [t for t in self._handling if t is not asyncio.current_task()]
        if busy:
            await asyncio.wait(busy, timeout=STOP_DRAIN_S)
            for t in busy:
                t.cancel()
            for t in busy:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        with contextlib.suppress(TimeoutError):   # calls of the core under way
            await asyncio.wait_for(self._idle.wait(), STOP_DRAIN_S)
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        self._presses.clear()

    # -- inbound ---------------------------------------------------------------------------
    @staticmethod
    def identity(user: discord.abc.User) -> Identity:
        """The snowflake decides; the display name only labels."""
        return Identity("discord", str(user.id), display_name=user.display_name or "")

    def _track(self) -> None:
        """Count the event handler that runs now (discord.py made its task) so :meth:`stop`
        can let it finish."""
        t = asyncio.current_task()
        if t is not None:
            self._handling.add(t)
            t.add_done_callback(self._handling.discard)

    async def on_message(self, message: discord.Message) -> None:
        self._track()
        h, client = self._handler, self.client
        if h is None or client is None or client.user is None:
            return
        if message.author.bot or message.author.id == client.user.id:
            return
        # a one-to-one DM; a server channel (cached or not) or a group DM is not direct
        direct = isinstance(message.channel, discord.DMChannel)
        text = message.content or ""
        if not direct:   # in a server channel: only what is addressed to the bot
            if not any(u.id == client.user.id for u in message.mentions):
                return
            for form in (f"<@{client.user.id}>", f"<@!{client.user.id}>"):
                text = text.replace(form, "")
            text = text.strip()
        snapshots = list(getattr(message, "message_snapshots", None) or [])
        forwarded = bool(snapshots)
        for snap in snapshots:
            if snap.content:
                text = (text + "\n" if text else "") + snap.content
        files = await self._files(message)
        if not text.strip() and not files:
            return
        await h.on_message(Inbound(self.identity(message.author), str(message.channel.id),
                                   text, message_id=str(message.id), direct=direct,
                                   forwarded=forwarded, files=files))

    async def _files(self, message: discord.Message) -> tuple[InboundFile, ...]:
        out: list[InboundFile] = []
        for a in message.attachments[:10]:
            if a.size > MAX_FILE_BYTES:
                out.append(InboundFile(a.filename, f"[a file of {a.size} bytes, over the "
                                                   f"{MAX_FILE_BYTES}-byte limit: not read]"))
                continue
            try:
                data = await _call(a.read)
            except (ChannelError, RateLimited) as e:
                out.append(InboundFile(a.filename, f"[the file could not be downloaded: {e}]"))
                continue
            out.append(InboundFile(a.filename,
                                   data[:MAX_FILE_BYTES].decode("utf-8", "replace")))
        return tuple(out)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        self._track()
        h = self._handler
        if h is None or interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if interaction.message is None or interaction.channel_id is None:
            return
        key = str(interaction.id)
        self._presses[key] = interaction
        while len(self._presses) > _MAX_OPEN_PRESSES:
            self._presses.popitem(last=False)
        await h.on_button(ButtonPress(self.identity(interaction.user),
                                      str(interaction.channel_id), str(interaction.message.id),
                                      custom_id, ack_token=key))

    # -- outbound --------------------------------------------------------------------------
    async def _rest(self, fn: Callable[[], Awaitable[T]]) -> T:
        """One outbound REST call, counted so :meth:`stop` lets it finish."""
        self._inflight += 1
        self._idle.clear()
        try:
            return await _call(fn)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _client(self) -> discord.Client:
        if self.client is None:
            raise ChannelError(f"discord channel {self.name} is not running")
        return self.client

    def _channel(self, chat_id: str) -> discord.PartialMessageable:
        try:
            cid = int(chat_id)
        except ValueError:
            raise ChannelError(f"discord: {chat_id!r} is not a channel id") from None
        return self._client().get_partial_messageable(cid)

    async def send_text(self, chat_id: str, text: str) -> str:
        ch = self._channel(chat_id)
        m = await self._rest(lambda: ch.send(content=text[:self.max_chars]))
        return str(m.id)

    async def send_approval(self, chat_id: str, card: ApprovalCard) -> str:
        ch = self._channel(chat_id)
        m = await self._rest(lambda: ch.send(content=_cut(card.text(), self.max_chars),
                                        view=_Buttons(card)))
        return str(m.id)

    async def edit_approval(self, chat_id: str, message_id: str, card: ApprovalCard) -> None:
        msg = self._channel(chat_id).get_partial_message(int(message_id))
        await self._rest(lambda: msg.edit(content=_cut(card.text(), self.max_chars), view=None))

    async def send_file(self, chat_id: str, filename: str, data: bytes, caption: str = ""
                        ) -> str:
        ch = self._channel(chat_id)
        m = await self._rest(lambda: ch.send(content=caption[:self.max_chars] or None,
                                        file=discord.File(io.BytesIO(data), filename)))
        return str(m.id)

    async def ack(self, press: ButtonPress, text: str) -> None:
        """An ephemeral answer to the press (only the presser sees it)."""
        interaction = self._presses.pop(press.ack_token, None)
        if interaction is None or interaction.response.is_done():
            return
        await self._rest(lambda: interaction.response.send_message(text[:self.max_chars],
                                                              ephemeral=True))

    async def direct_chat(self, who: Identity) -> str:
        client = self._client()
        ch = await self._rest(lambda: client.create_dm(discord.Object(id=int(who.user_id))))
        return str(ch.id)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "platform": self.platform, "bot_id": self.bot_id,
                "api_base": self.api_base, "gateway": self.gateway}
