"""Provider configs (discriminator, secrets, cloud off until configured), the gateway's choice
of default (never local -> cloud), and the tolerant-in-form, strict-in-content parsing of
tool calls written as text."""

from __future__ import annotations

import pytest

from closedpaw.errors import ConfigError, ProviderNotConfigured
from closedpaw.providers import (
    AnthropicConfig,
    Gateway,
    LocalConfig,
    OllamaConfig,
    OpenAIConfig,
    mapping_resolver,
    parse_provider_config,
)
from closedpaw.providers.errors import TABLE
from closedpaw.providers.toolparse import parse_text_tool_calls

ALLOWED = {"run_code", "read_file"}


@pytest.mark.parametrize("text", [
    '{"name": "run_code", "arguments": {"language": "python", "code": "print(1)"}}',
    '<tool_call>\n{"name": "run_code", "arguments": {"language": "python", "code": "print(1)"}}'
    '\n</tool_call>',
    '```json\n{"name": "run_code", "arguments": {"language": "python", "code": "print(1)"}}\n```',
    '<tool_call>```json\n{"name": "run_code", "arguments": "{\\"language\\": \\"python\\", '
    '\\"code\\": \\"print(1)\\"}"}\n```</tool_call>',
    '[{"name": "run_code", "parameters": {"language": "python", "code": "print(1)"}}]',
])
def test_tolerant_forms(text: str) -> None:
    calls = parse_text_tool_calls(text, ALLOWED)
    assert calls is not None and len(calls) == 1
    assert calls[0].name == "run_code"
    assert calls[0].arguments == {"language": "python", "code": "print(1)"}


@pytest.mark.parametrize("text", [
    'Here you go: {"name": "run_code", "arguments": {}}',                 # prose around it
    '<tool_call>{"name": "run_code", "arguments": {}}</tool_call> and then more',
    '{"name": "write_file", "arguments": {"path": "/etc/cron.d/x"}}',     # not offered
    '{"name": "run_code", "arguments": [1, 2]}',                          # args not an object
    '{"name": "run_code", "arguments": {}, "extra": 1}',                  # unknown keys
    '<tool_call>{"name": "run_code", "arguments": {</tool_call>',         # broken JSON
    '{"name": 5, "arguments": {}}',
    '', 'The answer is 391.',
])
def test_text_that_looks_like_a_call_is_text(text: str) -> None:
    assert parse_text_tool_calls(text, ALLOWED) is None


def test_no_tools_offered_means_no_calls() -> None:
    assert parse_text_tool_calls('{"name": "run_code", "arguments": {}}', set()) is None


def test_discriminator_and_lazy_build() -> None:
    c = parse_provider_config({"type": "openai", "name": "vllm",
                               "base_url": "http://127.0.0.1:8000/v1", "model": "m"})
    assert isinstance(c, OpenAIConfig)
    with pytest.raises(ConfigError, match="type"):
        parse_provider_config({"type": "nope"})
    with pytest.raises(ConfigError, match="bogus"):
        parse_provider_config({"type": "ollama", "bogus": 1})


def test_api_keys_only_as_secret_references() -> None:
    with pytest.raises(ConfigError, match="secret:NAME"):
        AnthropicConfig(api_key="sk-live-123").build(mapping_resolver({}))
    with pytest.raises(ProviderNotConfigured, match="CLOSEDPAW_SECRET_ANTHROPIC"):
        AnthropicConfig(api_key="secret:anthropic").build(mapping_resolver({}))
    p = AnthropicConfig(api_key="secret:anthropic").build(
        mapping_resolver({"CLOSEDPAW_SECRET_ANTHROPIC": "k"}))
    assert p.locality == "cloud"
    p.close()


def test_cloud_is_off_until_configured() -> None:
    with pytest.raises(ProviderNotConfigured):
        AnthropicConfig().build(None)
    with pytest.raises(ProviderNotConfigured, match="cloud base_url"):
        OpenAIConfig().build(None)   # api.openai.com without a key
    p = OpenAIConfig(base_url="http://127.0.0.1:9/v1").build(None)   # llama.cpp server
    assert p.locality == "local"
    p.close()


def test_no_silent_fallback_from_local_to_cloud(tmp_path: object) -> None:
    """Only a cloud provider is healthy-looking; the local ones are down: the default is an
    error, never the cloud one."""
    resolver = mapping_resolver({"CLOSEDPAW_SECRET_K": "k"})
    gw = Gateway([OllamaConfig(name="ollama", base_url="http://127.0.0.1:9", timeout_s=1),
                  LocalConfig(name="local", model_path=None, model="nonexistent-model"),
                  AnthropicConfig(name="claude", api_key="secret:K")], resolver=resolver)
    try:
        with pytest.raises(ProviderNotConfigured, match="no local provider"):
            gw.default_name()
        assert gw.get("claude").locality == "cloud"   # usable when named
    finally:
        gw.close()


def test_gateway_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match="two providers"):
        Gateway([OllamaConfig(name="a"), OllamaConfig(name="a")])
    with pytest.raises(ConfigError, match="default"):
        Gateway([OllamaConfig(name="a")], default="b")
    with pytest.raises(ProviderNotConfigured, match="no provider named"):
        Gateway([OllamaConfig(name="a")]).get("zzz")


def test_every_kind_has_a_hint() -> None:
    assert all(hint for _, hint in TABLE.values())
