"""The providers settings section, the providers file, and the secret resolver the gate hands
the providers (environment while no vault is configured; a vault's resolver; fail closed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from closedpaw.audit import AuditLog
from closedpaw.errors import ConfigError, NotConfigured, ProviderNotConfigured
from closedpaw.gate.executors.context import ExecutionContext, secret_resolver_for
from closedpaw.providers import Gateway
from closedpaw.settings import Settings


def _no_sandboxes() -> Any:
    raise AssertionError("no sandbox is needed here")


def _ctx(tmp_path: Path, s: Settings, vault: Any = None) -> ExecutionContext:
    return ExecutionContext(settings=s, audit=AuditLog(tmp_path / "audit"),
                            sandboxes=_no_sandboxes, vault=vault,
                            secret_resolver=secret_resolver_for(s, vault))


def test_without_a_vault_secrets_come_from_their_environment_variables(tmp_path: Path) -> None:
    s = Settings.from_env({"CLOSEDPAW_SECRET_OPENAI_KEY": "sk-1"})
    ctx = _ctx(tmp_path, s)
    assert ctx.resolve_secret("openai-key") == "sk-1"
    with pytest.raises(NotConfigured, match="CLOSEDPAW_SECRET_MISSING"):
        ctx.resolve_secret("missing")


def test_an_initialized_vault_is_asked_and_the_environment_never_is(tmp_path: Path) -> None:
    from closedpaw.vault import Vault

    s = Settings.from_env({"CLOSEDPAW_SECRET_K": "from-env", "CLOSEDPAW_SECRET_ONLY": "env"})
    with Vault(f"sqlite:///{tmp_path / 'v.db'}") as v:
        v.init_key_file(tmp_path / "vault.key")
        v.set("k", "from-vault", "standard")
        ctx = _ctx(tmp_path, s, v)
        assert ctx.resolve_secret("k") == "from-vault"
        with pytest.raises(NotConfigured, match="the vault"):
            ctx.resolve_secret("only")


def test_a_locked_vault_fails_closed_and_an_empty_one_leaves_the_environment(
        tmp_path: Path) -> None:
    from closedpaw.errors import VaultLocked
    from closedpaw.vault import Vault

    s = Settings.from_env({"CLOSEDPAW_SECRET_K": "from-env"})
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with Vault(url) as empty:   # no vault initialized in this database: the environment
        assert _ctx(tmp_path, s, empty).resolve_secret("k") == "from-env"
        empty.init_key_file(tmp_path / "vault.key")
        empty.set("k", "from-vault", "standard")
    # initialized but locked: refused, never the environment
    with Vault(url) as locked, pytest.raises(VaultLocked):
        _ctx(tmp_path, s, locked).resolve_secret("k")
    bare = ExecutionContext(settings=s, audit=AuditLog(tmp_path / "audit2"),
                            sandboxes=_no_sandboxes)
    with pytest.raises(NotConfigured, match="no secret resolver"):
        bare.resolve_secret("k")


def test_cloud_keys_resolve_through_the_resolver_handed_to_the_gateway(tmp_path: Path) -> None:
    f = tmp_path / "providers.json"
    f.write_text(json.dumps({"default": "claude", "providers": [
        {"type": "anthropic", "name": "claude", "api_key": "secret:ANTHROPIC"}]}))
    s = Settings.of(providers_file=f)
    missing = Gateway.from_settings(s, resolver=secret_resolver_for(s))
    with pytest.raises(ProviderNotConfigured, match="CLOSEDPAW_SECRET_ANTHROPIC"):
        missing.get("claude")
    s2 = Settings.from_env({"CLOSEDPAW_PROVIDERS_FILE": str(f),
                            "CLOSEDPAW_SECRET_ANTHROPIC": "sk-ant"})
    gw = Gateway.from_settings(s2, resolver=secret_resolver_for(s2))
    try:
        assert gw.get("claude").locality == "cloud"
    finally:
        gw.close()


def test_the_built_in_pair_follows_the_section(tmp_path: Path) -> None:
    s = Settings.of(data_dir=tmp_path, ollama_url="http://127.0.0.1:9", default_provider="local",
                    local_model_path=tmp_path / "m.gguf")
    gw = Gateway.from_settings(s)
    assert gw.names() == ["ollama", "local"] and gw.default_name() == "local"
    assert gw.config("ollama").base_url == "http://127.0.0.1:9"  # type: ignore[union-attr]
    assert gw.config("local").model_path == tmp_path / "m.gguf"  # type: ignore[union-attr]


@pytest.mark.parametrize("env, says", [
    ({"CLOSEDPAW_TURN_MAX_TOOL_CALLS": "0"}, "turn_max_tool_calls"),
    ({"CLOSEDPAW_OLLAMA_URL": "file:///etc/passwd"}, "ollama_url"),
    ({"CLOSEDPAW_TURN_WALL_S": "soon"}, "CLOSEDPAW_TURN_WALL_S"),
])
def test_bad_values_name_the_setting(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env(env)


def test_an_unreadable_providers_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.of(providers_file=tmp_path / "nope.yaml").providers.load_file()
    (tmp_path / "p.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Settings.of(providers_file=tmp_path / "p.json").providers.load_file()
