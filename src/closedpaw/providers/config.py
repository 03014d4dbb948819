"""Provider configuration: one class per backend, picked by its ``type`` discriminator, each
building its adapter lazily (``build``), so importing the config never imports an SDK.

Precedence (highest first): an argument to a call (``model=``) > the provider's config > the
defaults here. API keys are never stored in the config: ``api_key: "secret:NAME"`` is resolved
when the adapter is built, through the resolver the composition root passes in
(:func:`closedpaw.gate.executors.context.secret_resolver_for`: the vault when configured, else
the ``CLOSEDPAW_SECRET_<NAME>`` variables the settings read).

Cloud providers (openai with a cloud base_url, anthropic, google) are off until configured, and
nothing ever falls back from a local provider to a cloud one: a failing provider is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from closedpaw.errors import ConfigError, ProviderNotConfigured
from closedpaw.providers.types import is_loopback_url
from closedpaw.settings import SECRET_ENV_PREFIX

if TYPE_CHECKING:
    from closedpaw.providers.types import Provider

__all__ = ["SECRET_ENV_PREFIX", "AnthropicConfig", "GoogleConfig", "LocalConfig",
           "OllamaConfig", "OpenAIConfig", "ProviderConfig", "SecretResolver",
           "is_loopback_url", "mapping_resolver", "parse_provider_config",
           "resolve_key"]

#: resolves a secret name to its value, or None when unknown
SecretResolver = Callable[[str], "str | None"]


def mapping_resolver(env: Mapping[str, str], prefix: str = SECRET_ENV_PREFIX) -> SecretResolver:
    """A resolver over a mapping (the environment at the composition root): ``NAME`` ->
    ``env[prefix + NAME]`` (tests, and tools that hold such a mapping)."""
    def resolve(name: str) -> str | None:
        return env.get(prefix + name.upper().replace("-", "_").replace(".", "_"))
    return resolve


def resolve_key(value: str | None, resolver: SecretResolver | None, provider: str
                ) -> str | None:
    """``secret:NAME`` -> the resolver's value; a literal key is refused (keys do not belong
    in config files)."""
    if value is None:
        return None
    if not value.startswith("secret:") or len(value) <= 7:
        raise ConfigError(f"providers.{provider}.api_key: give it as 'secret:NAME' (resolved "
                          f"from {SECRET_ENV_PREFIX}NAME), never the key itself")
    name = value[7:]
    got = resolver(name) if resolver is not None else None
    if not got:
        raise ProviderNotConfigured(f"secret {name!r} is not set", provider=provider,
                                    hint=f"set {SECRET_ENV_PREFIX}{name.upper()}")
    return got


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", pattern=r"^$|^[a-z][a-z0-9_-]{0,31}$")
    model: str = Field(default="", max_length=200)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    enabled: bool = True

    @property
    def provider_name(self) -> str:
        return self.name or str(getattr(self, "type", "provider"))

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        raise NotImplementedError


class OllamaConfig(_Base):
    type: Literal["ollama"] = "ollama"
    base_url: str = "http://127.0.0.1:11434"
    model: str = "qwen2.5-coder:0.5b"

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        from closedpaw.providers.ollama import OllamaProvider

        return OllamaProvider(self)


class OpenAIConfig(_Base):
    """Chat Completions by base URL: OpenAI, Mistral, llama.cpp's server, vLLM, LM Studio.
    A loopback base_url is local; any other is cloud and needs an api_key."""

    type: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    model: str = "gpt-4o-mini"

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        from closedpaw.providers.openai_compat import OpenAIProvider

        key = resolve_key(self.api_key, resolver, self.provider_name)
        if key is None and not is_loopback_url(self.base_url):
            raise ProviderNotConfigured("a cloud base_url needs api_key: secret:NAME",
                                        provider=self.provider_name)
        return OpenAIProvider(self, key)


class AnthropicConfig(_Base):
    type: Literal["anthropic"] = "anthropic"
    base_url: str = "https://api.anthropic.com"
    api_key: str | None = None
    model: str = "claude-3-5-haiku-latest"
    max_tokens: int = Field(default=1024, ge=1, le=200_000)

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        from closedpaw.providers.anthropic_msgs import AnthropicProvider

        key = resolve_key(self.api_key, resolver, self.provider_name)
        if key is None:
            raise ProviderNotConfigured("needs api_key: secret:NAME", provider=self.provider_name)
        return AnthropicProvider(self, key)


class GoogleConfig(_Base):
    type: Literal["google"] = "google"
    base_url: str = "https://generativelanguage.googleapis.com"
    api_key: str | None = None
    model: str = "gemini-2.0-flash"

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        from closedpaw.providers.google_gemini import GoogleProvider

        key = resolve_key(self.api_key, resolver, self.provider_name)
        if key is None:
            raise ProviderNotConfigured("needs api_key: secret:NAME", provider=self.provider_name)
        return GoogleProvider(self, key)


class LocalConfig(_Base):
    """The embedded model (llama-cpp-python) in a worker thread of this process."""

    type: Literal["local"] = "local"
    model: str = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    #: the GGUF file; None = ``<data_dir>/models/<model>.gguf`` (given by the caller)
    model_path: Path | None = None
    n_ctx: int = Field(default=4096, ge=256, le=131072)
    n_threads: int = Field(default=2, ge=1, le=256)
    seed: int = 0
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1, le=32768)

    def build(self, resolver: SecretResolver | None = None) -> Provider:
        from closedpaw.providers.local import LocalProvider

        return LocalProvider(self)


ProviderConfig = Annotated[OllamaConfig | OpenAIConfig | AnthropicConfig | GoogleConfig
                           | LocalConfig, Field(discriminator="type")]
_ADAPTER: TypeAdapter[ProviderConfig] = TypeAdapter(ProviderConfig)


def parse_provider_config(raw: object) -> ProviderConfig:
    """A config from its dict form (settings file section); ConfigError naming the field."""
    from pydantic import ValidationError

    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"providers: {loc or 'entry'}: {err['msg']}") from None
