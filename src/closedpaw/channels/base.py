"""The adapter interface every channel (Telegram, Slack, Discord, Matrix) implements, and the
platform-neutral pieces they share.

The split::

    platform  --(adapter: library, wire)-->  Inbound / ButtonPress  -->  ChannelCore (core.py)
    ChannelCore: allowlist + pairing, screening, Assistant.send, approvals through the gate
    ChannelCore  --(Adapter methods)-->  platform messages (text, approval card, file, edit)

An adapter knows its platform and nothing about the gate: it turns a platform update into an
:class:`Inbound` (or a :class:`ButtonPress`) carrying the sender's :class:`Identity` (the
platform's IMMUTABLE id, never a display name) and hands it to the :class:`Handler` it was
started with; and it carries out the handler's :meth:`Adapter.send_text`,
:meth:`Adapter.send_approval`, :meth:`Adapter.edit_approval` and :meth:`Adapter.send_file`
calls on the platform. Everything that decides who may talk or approve lives in the core.

Rules an adapter keeps:

- ``Identity.user_id`` is the platform's immutable id (Telegram numeric user id, Discord
  snowflake, Slack user id + team id, Matrix ``@user:server``). ``display_name`` is for humans
  and is never compared (it is excluded from equality).
- messages longer than :attr:`Adapter.max_chars` are sent in parts made by
  :func:`split_message`.
- a platform's "too many requests" (HTTP 429, ``retry_after``, Slack ``Retry-After``) is
  raised as :class:`RateLimited` from the one low-level call that met it, and every call goes
  through :func:`with_backoff`, which sleeps the time the platform asked for and retries.
- an approval button carries :meth:`ApprovalPayload.encode` (action id + the parameters'
  sha256 + the verb, at most 64 bytes: it fits Telegram's callback data); the press is handed
  to the core undecoded, which decodes it and lets the gate decide.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from closedpaw.settings import ChannelConfig

__all__ = ["MAX_RETRIES", "PLATFORMS", "Adapter", "Allowlist", "ApprovalCard",
           "ApprovalPayload", "ButtonPress", "Handler", "Identity", "Inbound", "InboundFile",
           "RateLimited", "Verb", "split_message", "with_backoff"]

#: the platforms a channel ``type`` may name ("cli" is ``closedpaw chat``: see docs/channels.md)
PLATFORMS = ("telegram", "slack", "discord", "matrix")

#: how often :func:`with_backoff` retries after a 429 before it gives up (re-raises)
MAX_RETRIES = 5
#: the longest wait :func:`with_backoff` accepts from a platform (seconds); more: give up
MAX_RETRY_AFTER_S = 300.0

T = TypeVar("T")
Verb = Literal["approve", "reject"]

_ID_RE = re.compile(r"[A-Za-z0-9@:._=+\-!#]{1,255}")


# -- who is talking ------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """A platform user, by the platform's immutable id.

    ``scope`` qualifies ids that are unique only within something (Slack: the team id, since
    a Slack user id is unique per workspace); empty elsewhere. ``display_name`` is shown in
    messages and audit entries and NEVER used to decide anything (``compare=False``: two
    identities with the same id and different names are equal; the same name with another id
    is someone else).
    """

    platform: str
    user_id: str
    scope: str = ""
    display_name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"identity: unknown platform {self.platform!r}")
        for name in ("user_id", "scope"):
            v = getattr(self, name)
            if (v or name == "user_id") and not _ID_RE.fullmatch(v):
                raise ValueError(f"identity: {name} {v!r} is not a platform id")

    @property
    def key(self) -> str:
        """The stable string an allowlist and the pairing table hold: ``USER`` or
        ``SCOPE/USER`` (Slack ``T0123/U0456``). The platform is the channel's, not repeated."""
        return f"{self.scope}/{self.user_id}" if self.scope else self.user_id

    @classmethod
    def from_key(cls, platform: str, key: str) -> Identity:
        """The inverse of :attr:`key` (``ValueError`` for a malformed one)."""
        scope, _, user = key.rpartition("/")
        return cls(platform, user, scope)

    def describe(self) -> str:
        """For humans: ``'Ann' (telegram 12345)``; the id is always shown."""
        name = f"{self.display_name!r} " if self.display_name else ""
        return f"{name}({self.platform} {self.key})"


@dataclass(frozen=True)
class Allowlist:
    """Who may talk, by :attr:`Identity.key`. EMPTY MEANS NOBODY (fail closed): there is no
    wildcard. The core joins the configured list with the identities paired at run time."""

    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, keys: Iterable[str]) -> Allowlist:
        return cls(frozenset(str(k) for k in keys))

    def allows(self, who: Identity) -> bool:
        return bool(self.keys) and who.key in self.keys

    def __len__(self) -> int:
        return len(self.keys)


# -- platform -> core ------------------------------------------------------------------------
@dataclass(frozen=True)
class InboundFile:
    """A file sent or forwarded with a message, as text (the adapter decodes UTF-8 with
    replacement and cuts it at its own limit); it is screened and given to the model as
    untrusted content, never executed."""

    name: str
    text: str


@dataclass(frozen=True)
class Inbound:
    """One platform message. ``chat_id`` is where answers go (Telegram chat id, Slack
    channel, Discord channel, Matrix room); ``direct`` is True in a one-to-one chat.
    ``forwarded`` marks text the sender relayed from someone else (still screened)."""

    identity: Identity
    chat_id: str
    text: str
    message_id: str = ""
    direct: bool = True
    forwarded: bool = False
    files: tuple[InboundFile, ...] = ()


@dataclass(frozen=True)
class ButtonPress:
    """Someone pressed an approval button. ``payload`` is the button's data exactly as the
    platform returned it (untrusted: anyone able to craft a callback can send anything);
    ``message_id`` is the message that carries the button (edited with the outcome)."""

    identity: Identity
    chat_id: str
    message_id: str
    payload: str
    #: the platform's id for answering the press itself (Telegram callback query id, Slack
    #: response_url, ...); the adapter's own business, passed back in :meth:`Adapter.ack`
    ack_token: str = ""


class Handler(Protocol):
    """What an adapter hands platform events to (the core implements it). Both return when
    the event is fully handled; an adapter awaits them one chat at a time or concurrently."""

    async def on_message(self, msg: Inbound) -> None: ...

    async def on_button(self, press: ButtonPress) -> None: ...


# -- approvals -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalPayload:
    """What an approval button carries: the action id, the sha256 of the action's canonical
    parameters the card showed, and the verb. Encoded in at most 64 ASCII bytes (Telegram's
    callback-data limit): ``'a'|'r'`` + base85(uuid 16 bytes + sha256 32 bytes) = 61 bytes.

    The gate approves only when the hash matches the stored parameters, so a button cannot
    approve different parameters than the ones shown, even when crafted."""

    action_id: str
    params_sha256: str
    verb: Verb = "approve"

    MAX_BYTES: ClassVar[int] = 64

    def encode(self) -> str:
        raw = uuid.UUID(self.action_id).bytes + bytes.fromhex(self.params_sha256)
        if len(raw) != 48:
            raise ValueError("approval payload: params_sha256 must be 64 hex characters")
        return ("a" if self.verb == "approve" else "r") + base64.b85encode(raw).decode()

    @classmethod
    def decode(cls, data: str) -> ApprovalPayload:
        """``ValueError`` for anything that is not a payload this module made."""
        if not isinstance(data, str) or len(data) != 61 or data[0] not in "ar":
            raise ValueError("not an approval payload")
        try:
            raw = base64.b85decode(data[1:])
        except ValueError:
            raise ValueError("not an approval payload") from None
        if len(raw) != 48:
            raise ValueError("not an approval payload")
        return cls(str(uuid.UUID(bytes=raw[:16])), raw[16:].hex(),
                   "approve" if data[0] == "a" else "reject")


@dataclass(frozen=True)
class ApprovalCard:
    """An action waiting for approval, as a chat message: its level, a readable summary, the
    canonical parameters (inline when short; the core also sends them as a file when long:
    ``parameters_file`` is then set and ``parameters`` holds a cut preview) and the two
    buttons' payloads. ``outcome`` is set when the card is edited after the decision."""

    action_id: str
    level: str
    summary: str
    parameters: str
    params_sha256: str
    approve: str                     # ApprovalPayload(..., "approve").encode()
    reject: str                      # ApprovalPayload(..., "reject").encode()
    parameters_file: bool = False
    outcome: str | None = None

    def text(self) -> str:
        """The card as plain text (adapters may format it richer but keep these facts)."""
        lines = [f"Approval needed: {self.level.upper()} action {self.action_id}",
                 self.summary,
                 f"params_sha256 {self.params_sha256}",
                 "parameters (attached as a file):" if self.parameters_file else "parameters:",
                 self.parameters]
        if self.outcome:
            lines.append(f"Outcome: {self.outcome}")
        return "\n".join(lines)


# -- core -> platform ------------------------------------------------------------------------
class Adapter(abc.ABC):
    """One platform connection. The core calls these; each is one or more platform API
    calls, each wrapped in :func:`with_backoff`. ``chat_id`` values are the ones the adapter
    put in :class:`Inbound` (or a direct-message target it can resolve from an identity, see
    :meth:`direct_chat`). Methods return the platform's message id where there is one."""

    #: the platform (one of :data:`PLATFORMS`)
    platform: ClassVar[str]
    #: the most characters one text message may hold on this platform
    max_chars: ClassVar[int]

    def __init__(self, name: str) -> None:
        #: the channel's name in the settings (several channels may share a platform)
        self.name = name

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: ChannelConfig, secret: Callable[[str], str]) -> Adapter:
        """Build the adapter of one configured channel. ``secret(NAME)`` returns the value
        of ``secret:NAME`` (the vault, or CLOSEDPAW_SECRET_NAME) or raises ChannelError;
        ``config.token_secret`` names the token, and ``config.options`` holds the platform's
        own options (values ``secret:NAME`` are to be resolved with ``secret`` too). The
        service finds the class by ``config.type`` in ``closedpaw.channels.service.ADAPTERS``
        (``"module:Class"``, imported only when such a channel is configured)."""

    @abc.abstractmethod
    async def start(self, handler: Handler) -> None:
        """Connect (check the token, e.g. Telegram getMe / Slack auth.test) and begin
        delivering events to ``handler``; return once receiving is running."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving and close connections; idempotent."""

    @abc.abstractmethod
    async def send_text(self, chat_id: str, text: str) -> str:
        """Send one message of at most :attr:`max_chars` characters (the core splits)."""

    @abc.abstractmethod
    async def send_approval(self, chat_id: str, card: ApprovalCard) -> str:
        """Post ``card`` with an Approve button carrying ``card.approve`` and a Reject button
        carrying ``card.reject``; returns the message id for :meth:`edit_approval`."""

    @abc.abstractmethod
    async def edit_approval(self, chat_id: str, message_id: str, card: ApprovalCard) -> None:
        """Replace the card's message with ``card`` (its ``outcome`` set) and remove the
        buttons."""

    @abc.abstractmethod
    async def send_file(self, chat_id: str, filename: str, data: bytes, caption: str = ""
                        ) -> str:
        """Upload ``data`` as a file into the chat."""

    async def ack(self, press: ButtonPress, text: str) -> None:  # noqa: B027 - optional
        """Answer a button press with a short notice to the presser (Telegram
        answerCallbackQuery); platforms without one do nothing."""

    async def direct_chat(self, who: Identity) -> str:
        """The chat id of a one-to-one conversation with ``who`` (e.g. to tell a stranger
        their pairing code in private); default: the user id itself."""
        return who.user_id

    def describe(self) -> dict[str, Any]:
        """Facts for ``closedpaw channels status`` (never the token)."""
        return {"name": self.name, "platform": self.platform}


# -- shared helpers --------------------------------------------------------------------------
class RateLimited(Exception):
    """The platform said "too many requests"; ``retry_after`` is the seconds it asked for
    (an adapter raises it from the library's own error: telegram.error.RetryAfter,
    slack_sdk SlackApiError with status 429 and Retry-After, discord.HTTPException 429...)."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(f"rate limited by the platform: retry after {retry_after} s"
                         + (f" ({detail})" if detail else ""))
        self.retry_after = float(retry_after)


async def with_backoff(call: Callable[[], Awaitable[T]], *, retries: int = MAX_RETRIES,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                       max_wait_s: float = MAX_RETRY_AFTER_S) -> T:
    """Run ``call``; on :class:`RateLimited` wait what the platform asked (at least 0.05 s,
    never more than ``max_wait_s``: a longer demand is re-raised) and try again, up to
    ``retries`` times. Returns ``call``'s result; the last RateLimited propagates."""
    attempt = 0
    while True:
        try:
            return await call()
        except RateLimited as e:
            attempt += 1
            if attempt > retries or e.retry_after > max_wait_s:
                raise
            await sleep(max(0.05, e.retry_after))


def split_message(text: str, limit: int) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` characters, preferring a paragraph break,
    then a line break, then a space, in the last half of each part; never loses or reorders a
    character (``''.join(parts) == text``), never returns an empty part (``[]`` for ``''``)."""
    if limit < 1:
        raise ValueError("split_message: limit must be at least 1")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            i = window.rfind(sep)
            if i >= limit // 2:
                cut = i + len(sep)
                break
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts
