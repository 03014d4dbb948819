"""The channels file: tokens only as vault references, allowlists of immutable ids, every
mistake refused with the file and entry named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import ConfigError
from closedpaw.settings import ChannelConfig, Settings


def _parse(**over: Any) -> ChannelConfig:
    raw = {"name": "tg", "type": "telegram", "token": "secret:TG", **over}
    return ChannelConfig.parse(raw, "f")


def test_a_good_entry() -> None:
    c = _parse(allow=["1", {"id": "T1/U2", "principal": "alice"}], pairing=False,
               options={"base_url": "http://127.0.0.1:1/bot", "x": "secret:OTHER"})
    assert c.token_secret == "TG" and not c.pairing and c.enabled
    assert [(a.id, a.principal) for a in c.allow] == [("1", None), ("T1/U2", "alice")]


def test_no_allow_key_is_an_empty_allowlist() -> None:
    assert _parse().allow == ()


@pytest.mark.parametrize(("over", "needle"), [
    ({"token": "123:abc"}, "secret:NAME"),
    ({"token": None}, "secret:NAME"),
    ({"type": "irc"}, "type"),
    ({"name": "Bad Name"}, "name"),
    ({"allow": "123"}, "allow"),
    ({"allow": [{"id": "1", "role": "admin"}]}, "allow[0]"),
    ({"allow": [{"id": "a b"}]}, "immutable user id"),
    ({"allow": [{"id": "../.."}]}, "not an id"),
    ({"allow": ["1", "1"]}, "twice"),
    ({"allow": [{"id": "1", "principal": "bad name!"}]}, "principal"),
    ({"enabled": "yes"}, "enabled"),
    ({"options": {"signing_secret": "plain"}}, "vault reference"),
    ({"options": {"x": "secret:bad name"}}, "secret:NAME"),
    ({"token_plain": "x"}, "unknown key"),
])
def test_mistakes_are_refused_with_where(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=r"(?s)f.*" + needle.replace("[", r"\[")
                       .replace("]", r"\]")):
        _parse(**over)


def test_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"channels": [{"name": "a", "type": "slack", "token": "secret:S"}]}')
    assert [c.name for c in Settings.of(channels_file=f).channels.load()] == ["a"]
    f.write_text('{"channels": [{"name": "a", "type": "slack", "token": "secret:S"},'
                 ' {"name": "a", "type": "telegram", "token": "secret:T"}]}')
    with pytest.raises(ConfigError, match="used twice"):
        Settings.of(channels_file=f).channels.load()
    f.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold"):
        Settings.of(channels_file=f).channels.load()
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.of(channels_file=tmp_path / "missing.yaml").channels.load()
    assert Settings.of().channels.load() == []
