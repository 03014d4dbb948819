"""Telegram, on python-telegram-bot (the official-API library): long polling through
``Application`` (built with ``ApplicationBuilder().base_url(...)``, so a self-hosted Bot API
server or a test's fake one can stand in for api.telegram.org), concurrent updates.

Inbound: a message's sender is ``from_user.id`` (numeric, immutable; the username and names
are display only); text or a caption; a document (at most ``MAX_FILE_BYTES``) is downloaded and
passed on as text; a forwarded message is marked. A callback query (an inline button press) is
a :class:`~closedpaw.channels.base.ButtonPress` of its ``data``.

Outbound: ``sendMessage`` (4096 characters at most), ``sendMessage`` with an inline keyboard
for an approval card, ``editMessageText`` for its outcome (buttons removed), ``sendDocument``,
``answerCallbackQuery``. A 429 (``retry_after`` in the answer's parameters) becomes
:class:`~closedpaw.channels.base.RateLimited`; other API errors are :class:`ChannelError` from
one table.
"""

from __future__ import annotations

import contextlib
import datetime as dtm
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

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

__all__ = ["DEFAULT_BASE_URL", "MAX_FILE_BYTES", "TelegramAdapter"]

log = logging.getLogger("closedpaw.channels.telegram")
T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.telegram.org/bot"
MAX_FILE_BYTES = 1 << 20

#: the library's errors -> ours, with what to do (first match wins)
_ERRORS: list[tuple[type[TelegramError], str]] = [
    (InvalidToken, "Telegram refused the bot token: store the right one with 'closedpaw "
                   "secret set NAME' (from @BotFather)"),
    (Forbidden, "Telegram refused: the bot was blocked by the user or is not in that chat"),
    (BadRequest, "Telegram refused the request"),
    (TimedOut, "Telegram did not answer in time"),
    (NetworkError, "Telegram is unreachable (network, or the base_url option is wrong)"),
    (TelegramError, "Telegram answered with an error"),
]


def _seconds(e: RetryAfter) -> float:
    with warnings.catch_warnings():   # the int/timedelta migration warns on access
        warnings.simplefilter("ignore")
        ra = e.retry_after
    return ra.total_seconds() if isinstance(ra, dtm.timedelta) else float(ra)


async def _call(fn: Callable[[], Awaitable[T]], token: str = "") -> T:
    """One Bot API call with the library's errors mapped (429 -> RateLimited). ``token`` is
    cut out of the message (the library names a refused token in its error)."""
    try:
        return await fn()
    except RetryAfter as e:
        raise RateLimited(_seconds(e), "telegram") from None
    except TelegramError as e:
        detail = e.message.replace(token, "<token>") if token else e.message
        for kind, text in _ERRORS:
            if isinstance(e, kind):
                raise ChannelError(f"{text}: {detail}") from None
        raise  # pragma: no cover - TelegramError is the last row


class TelegramAdapter(Adapter):
    platform = "telegram"
    max_chars = 4096

    def __init__(self, name: str, token: str, *, base_url: str = DEFAULT_BASE_URL,
                 base_file_url: str | None = None, poll_timeout_s: float = 10.0) -> None:
        super().__init__(name)
        self._token = token
        self.base_url = base_url
        self.base_file_url = base_file_url or base_url.replace("/bot", "/file/bot", 1)
        self.poll_timeout_s = poll_timeout_s
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._handler: Handler | None = None
        self.bot_username = ""

    @classmethod
    def from_config(cls, config: ChannelConfig, secret: Callable[[str], str]
                    ) -> TelegramAdapter:
        o = dict(config.options)
        unknown = set(o) - {"base_url", "base_file_url", "poll_timeout_s"}
        if unknown:
            raise ChannelError(f"channel {config.name}: unknown telegram option(s) "
                               f"{sorted(unknown)}")
        return cls(config.name, secret(config.token_secret),
                   base_url=str(o.get("base_url") or DEFAULT_BASE_URL),
                   base_file_url=o.get("base_file_url"),
                   poll_timeout_s=float(o.get("poll_timeout_s", 10.0)))

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        self._handler = handler
        app = (ApplicationBuilder().token(self._token).base_url(self.base_url)
               .base_file_url(self.base_file_url).concurrent_updates(True).build())
        app.add_handler(TypeHandler(Update, self._on_update))
        app.add_error_handler(self._on_error)
        try:
            await _call(app.initialize, self._token)   # getMe: a wrong token fails here
        except BaseException:
            with contextlib.suppress(Exception):
                await app.bot.shutdown()   # the HTTP clients it opened before failing
            raise
        self.bot_username = app.bot.username or ""
        self._app = app   # before polling: the first update may be answered at once
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=int(self.poll_timeout_s),
                                        drop_pending_updates=False,
                                        allowed_updates=["message", "callback_query"])

    async def stop(self) -> None:
        app, self._app = self._app, None
        if app is None:
            return
        with contextlib.suppress(Exception):
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
        with contextlib.suppress(Exception):
            if app.running:
                await app.stop()
        await app.shutdown()

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram channel %s: %s", self.name, context.error)

    # -- inbound ---------------------------------------------------------------------------
    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        h = self._handler
        if h is None:
            return
        if update.callback_query is not None:
            q = update.callback_query
            msg = q.message
            if q.from_user is None or msg is None:
                return
            who = Identity("telegram", str(q.from_user.id),
                           display_name=q.from_user.full_name or "")
            await h.on_button(ButtonPress(who, str(msg.chat.id), str(msg.message_id),
                                          q.data or "", ack_token=q.id))
            return
        m = update.message
        if m is None or m.from_user is None or m.from_user.is_bot:
            return
        who = Identity("telegram", str(m.from_user.id), display_name=m.from_user.full_name or "")
        files = await self._files(m)
        text = m.text or m.caption or ""
        if not text and not files:
            return
        await h.on_message(Inbound(who, str(m.chat.id), text, message_id=str(m.message_id),
                                   direct=m.chat.type == "private",
                                   forwarded=m.forward_origin is not None, files=files))

    async def _files(self, m: Message) -> tuple[InboundFile, ...]:
        doc = m.document
        if doc is None:
            return ()
        name = doc.file_name or "file"
        if doc.file_size is not None and doc.file_size > MAX_FILE_BYTES:
            return (InboundFile(name, f"[a file of {doc.file_size} bytes, over the "
                                      f"{MAX_FILE_BYTES}-byte limit: not read]"),)
        try:
            f = await _call(doc.get_file)
            data = bytes(await _call(f.download_as_bytearray))
        except (ChannelError, RateLimited) as e:
            return (InboundFile(name, f"[the file could not be downloaded: {e}]"),)
        return (InboundFile(name, data[:MAX_FILE_BYTES].decode("utf-8", "replace")),)

    # -- outbound --------------------------------------------------------------------------
    def _bot(self) -> Any:
        if self._app is None:
            raise ChannelError(f"telegram channel {self.name} is not running")
        return self._app.bot

    async def send_text(self, chat_id: str, text: str) -> str:
        bot = self._bot()
        m = await _call(lambda: bot.send_message(chat_id=int(chat_id), text=text))
        return str(m.message_id)

    @staticmethod
    def _keyboard(card: ApprovalCard) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[
            InlineKeyboardButton(f"Approve ({card.level})", callback_data=card.approve),
            InlineKeyboardButton("Reject", callback_data=card.reject)]])

    async def send_approval(self, chat_id: str, card: ApprovalCard) -> str:
        bot = self._bot()
        text = card.text()
        if len(text) > self.max_chars:
            text = text[:self.max_chars - 40] + "\n[... cut: see the file]"
        m = await _call(lambda: bot.send_message(chat_id=int(chat_id), text=text,
                                                 reply_markup=self._keyboard(card)))
        return str(m.message_id)

    async def edit_approval(self, chat_id: str, message_id: str, card: ApprovalCard) -> None:
        bot = self._bot()
        text = card.text()
        if len(text) > self.max_chars:
            text = text[:self.max_chars - 40] + "\n[... cut: see the file]"
        await _call(lambda: bot.edit_message_text(text=text, chat_id=int(chat_id),
                                                  message_id=int(message_id),
                                                  reply_markup=None))

    async def send_file(self, chat_id: str, filename: str, data: bytes, caption: str = ""
                        ) -> str:
        bot = self._bot()
        m = await _call(lambda: bot.send_document(chat_id=int(chat_id), document=data,
                                                  filename=filename, caption=caption[:1024]))
        return str(m.message_id)

    async def ack(self, press: ButtonPress, text: str) -> None:
        if not press.ack_token:
            return
        bot = self._bot()
        await _call(lambda: bot.answer_callback_query(press.ack_token, text=text[:200]))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "platform": self.platform, "bot": self.bot_username,
                "base_url": self.base_url}

