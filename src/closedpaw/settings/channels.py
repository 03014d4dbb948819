"""The channels section: where the channels file is, and the limits every channel shares.

The channels file (YAML or JSON, ``CLOSEDPAW_CHANNELS_FILE``) lists the chat channels
``closedpaw serve`` starts::

    channels:
      - name: tg                      # unique; [a-z0-9_-], at most 32
        type: telegram                # telegram | slack | discord | matrix
        enabled: true                 # default true
        token: secret:TELEGRAM_TOKEN  # ONLY a vault reference: a plain token is refused
        pairing: true                 # strangers may ask for a pairing code (default true)
        allow:                        # immutable platform ids; EMPTY = NOBODY
          - id: "123456789"           # Telegram user id (Slack: TEAM/USER, e.g. T01/U02)
            principal: alice          # optional: the gate principal this person acts as
        options:                      # platform specifics; "secret:NAME" values are resolved
          base_url: https://api.telegram.org/bot

Parsing is here (the settings package is the one reader of configuration); yaml is imported
only when a ``.yaml``/``.yml`` file is read.
"""

from __future__ import annotations

import re
from pathlib import Path

from closedpaw._record import Record, field
from closedpaw.errors import ConfigError
from closedpaw.settings._field import setting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["CHANNEL_TYPES", "AllowEntry", "ChannelConfig", "ChannelSettings"]

CHANNEL_TYPES = ("telegram", "slack", "discord", "matrix")
# patterns (compiled on first use by re's cache: ``closedpaw run`` never parses a channel)
_NAME = r"[a-z0-9][a-z0-9_-]{0,31}"
_SECRET = r"secret:[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_PRINCIPAL = r"[A-Za-z0-9._-]{1,64}"
_ID = r"[A-Za-z0-9@:._=+\-!#/]{1,300}"


class AllowEntry(Record):
    """One allowed person: the platform's immutable id (as ``Identity.key``) and, optionally,
    the gate principal they act as (default: ``<channel>-<id>`` with the ``user`` role)."""

    id: str
    principal: str | None = None


class ChannelConfig(Record):
    """One channel of the channels file (validated; see the module docstring)."""

    name: str
    type: str
    token: str
    enabled: bool = True
    pairing: bool = True
    allow: tuple[AllowEntry, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def token_secret(self) -> str:
        """The vault name the token is read from (``secret:NAME`` -> ``NAME``)."""
        return self.token.split(":", 1)[1]

    @classmethod
    def parse(cls, raw: Any, where: str) -> ChannelConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a channel is a mapping (name, type, token, allow...)")
        known = {"name", "type", "token", "enabled", "pairing", "allow", "options"}
        extra = sorted(set(raw) - known)
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {extra}; known: {sorted(known)}")
        name = raw.get("name")
        if not isinstance(name, str) or not re.fullmatch(_NAME, name):
            raise ConfigError(f"{where}.name: 1-32 of a-z, 0-9, '_', '-' (got {name!r})")
        where = f"{where} ({name})"
        kind = raw.get("type")
        if kind not in CHANNEL_TYPES:
            raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(CHANNEL_TYPES)}")
        token = raw.get("token")
        if not isinstance(token, str) or not re.fullmatch(_SECRET, token):
            raise ConfigError(f"{where}.token: must be a vault reference 'secret:NAME' (store "
                              "the token with 'closedpaw secret set NAME'); a token in plain "
                              "configuration is refused")
        for flag in ("enabled", "pairing"):
            if flag in raw and not isinstance(raw[flag], bool):
                raise ConfigError(f"{where}.{flag}: true or false")
        allow_raw = raw.get("allow") or []
        if not isinstance(allow_raw, list):
            raise ConfigError(f"{where}.allow: a list of {{id, principal?}}")
        allow: list[AllowEntry] = []
        for i, a in enumerate(allow_raw):
            if isinstance(a, (str, int)) and not isinstance(a, bool):
                a = {"id": str(a)}
            if not isinstance(a, dict) or set(a) - {"id", "principal"}:
                raise ConfigError(f"{where}.allow[{i}]: {{id, principal?}}")
            ident = str(a.get("id", ""))
            if not re.fullmatch(_ID, ident):
                raise ConfigError(f"{where}.allow[{i}].id: the platform's immutable user id "
                                  f"(Telegram numeric id, Slack TEAM/USER, Discord snowflake, "
                                  f"Matrix @user:server), not {ident!r}")
            if not any(ch.isalnum() for ch in ident) or ".." in ident:
                raise ConfigError(f"{where}.allow[{i}].id: {ident!r} is not an id")
            p = a.get("principal")
            if p is not None and (not isinstance(p, str) or not re.fullmatch(_PRINCIPAL, p)):
                raise ConfigError(f"{where}.allow[{i}].principal: a principal name")
            allow.append(AllowEntry(ident, p))
        if len({a.id for a in allow}) != len(allow):
            raise ConfigError(f"{where}.allow: an id is listed twice")
        opts = raw.get("options") or {}
        if not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts):
            raise ConfigError(f"{where}.options: a mapping of names to values")
        for k, v in opts.items():
            if isinstance(v, str) and v.startswith("secret:") and not re.fullmatch(_SECRET, v):
                raise ConfigError(f"{where}.options.{k}: 'secret:NAME' with a valid name")
            if k in ("token", "bot_token", "signing_secret", "password", "access_token") \
                    and not (isinstance(v, str) and re.fullmatch(_SECRET, v)):
                raise ConfigError(f"{where}.options.{k}: must be a vault reference "
                                  "'secret:NAME', never a plain value")
        return cls(name=name, type=kind, token=token, enabled=raw.get("enabled", True),
                   pairing=raw.get("pairing", True), allow=tuple(allow), options=dict(opts))


class ChannelSettings(Record):
    """Chat channels (Telegram, Slack, Discord, Matrix): the file that lists them and the
    limits they share."""

    channels_file: Path | None = setting(
        None, env="CLOSEDPAW_CHANNELS_FILE", kind=Path,
        doc="YAML or JSON: {channels: [{name, type, token: secret:NAME, allow: [{id, "
        "principal?}], ...}]}; unset = no channels (see docs/channels.md)")
    channel_stranger_audit_per_minute: int = setting(
        30, env="CLOSEDPAW_CHANNEL_STRANGER_AUDIT_PER_MINUTE", kind=int,
        doc="messages from strangers audited one by one per channel per minute; the rest are "
        "counted into one summary entry per SUMMARY_PERIOD_S (a flood cannot fill the disk)")
    channel_max_file_chars: int = setting(
        100_000, env="CLOSEDPAW_CHANNEL_MAX_FILE_CHARS", kind=int,
        doc="characters of a file sent or forwarded in a chat passed to the assistant (the "
        "rest is cut, and said so)")

    def __post_init__(self) -> None:
        if not (1 <= self.channel_stranger_audit_per_minute <= 100_000):
            raise ConfigError("channel_stranger_audit_per_minute: between 1 and 100000")
        if not (1 <= self.channel_max_file_chars <= 1_000_000):
            raise ConfigError("channel_max_file_chars: between 1 and 1000000")

    def load(self) -> list[ChannelConfig]:
        """The channels of the file ([] when none is set), every entry checked; ConfigError
        naming the file and the entry for anything wrong."""
        path = self.channels_file
        if path is None:
            return []
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"channels_file: cannot read {path}: {e.strerror}") from None
        try:
            if path.suffix == ".json":
                import json

                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
        except ValueError as e:
            raise ConfigError(f"channels_file: {path} is not valid JSON: {e}") from None
        except Exception as e:  # yaml.YAMLError (yaml is imported only here)
            raise ConfigError(f"channels_file: {path} is not valid YAML: "
                              f"{' '.join(str(e).split())[:300]}") from None
        if raw is None:
            return []
        if not isinstance(raw, dict) or not isinstance(raw.get("channels", []), list) \
                or set(raw) - {"channels"}:
            raise ConfigError(f"channels_file: {path} must hold {{channels: [...]}}")
        out = [ChannelConfig.parse(c, f"channels_file: {path}: channels[{i}]")
               for i, c in enumerate(raw.get("channels") or [])]
        names = [c.name for c in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"channels_file: {path}: channel name(s) used twice: {dup}")
        return out
