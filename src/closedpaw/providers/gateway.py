"""The gateway: the configured providers by name, built lazily, and the choice of default.

The default is the ``default`` named in the config; without one, the first *local* provider
that is healthy (Ollama when it answers, else the embedded model). A cloud provider is used
only when named (by the config's ``default``, a conversation or a call): nothing ever falls
back from local to cloud.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from closedpaw.errors import ConfigError, ProviderNotConfigured
from closedpaw.providers.config import (
    LocalConfig,
    OllamaConfig,
    ProviderConfig,
    SecretResolver,
    parse_provider_config,
)
from closedpaw.providers.types import Provider
from closedpaw.settings import Settings

__all__ = ["Gateway", "default_configs"]


def default_configs(models_dir: Path | None = None) -> list[ProviderConfig]:
    """What runs out of the box: Ollama on 127.0.0.1:11434, and the embedded model."""
    local = LocalConfig(name="local")
    if models_dir is not None:
        local = local.model_copy(update={"model_path": models_dir / f"{local.model}.gguf"})
    return [OllamaConfig(name="ollama"), local]


class Gateway:
    def __init__(self, configs: list[ProviderConfig], *, default: str | None = None,
                 resolver: SecretResolver | None = None) -> None:
        self._configs: dict[str, ProviderConfig] = {}
        for c in configs:
            if c.provider_name in self._configs:
                raise ConfigError(f"providers: two providers are named {c.provider_name!r}")
            self._configs[c.provider_name] = c
        if default is not None and default not in self._configs:
            raise ConfigError(f"providers.default: {default!r} is not a configured provider")
        self._default = default
        self._resolver = resolver
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: SecretResolver | None = None
                      ) -> Gateway:
        """The providers section: its file when set (``{default?, providers: [...]}``), else
        ollama at ``ollama_url`` and the embedded model at ``local_model_path`` (unset:
        ``DATA_DIR/models/<model>.gguf``); ``default_provider`` over the file's default."""
        ps = settings.providers
        raw = dict(ps.load_file())
        if "providers" not in raw:
            local = LocalConfig(name="local")
            path = ps.local_model_path or settings.data_dir / "models" / f"{local.model}.gguf"
            raw["providers"] = [OllamaConfig(name="ollama", base_url=ps.ollama_url),
                                local.model_copy(update={"model_path": path})]
        if ps.default_provider is not None:
            raw["default"] = ps.default_provider
        return cls.from_mapping(raw, resolver=resolver)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, resolver: SecretResolver | None = None,
                     models_dir: Path | None = None) -> Gateway:
        """``{"default": NAME?, "providers": [{"type": ..., ...}, ...]}`` (the settings file's
        providers section); no list means :func:`default_configs`."""
        items = raw.get("providers")
        if items is None:
            configs = default_configs(models_dir)
        elif isinstance(items, list):
            configs = [x if isinstance(x, OllamaConfig | LocalConfig) else
                       parse_provider_config(x) for x in items]
        else:
            raise ConfigError("providers.providers: must be a list")
        default = raw.get("default")
        if default is not None and not isinstance(default, str):
            raise ConfigError("providers.default: must be a provider name")
        return cls(configs, default=default, resolver=resolver)

    def names(self) -> list[str]:
        return list(self._configs)

    def config(self, name: str) -> ProviderConfig:
        try:
            return self._configs[name]
        except KeyError:
            raise ProviderNotConfigured(
                f"no provider named {name!r} (configured: {', '.join(self._configs) or 'none'})",
                provider=name) from None

    def get(self, name: str | None = None) -> Provider:
        name = name or self.default_name()
        cfg = self.config(name)
        if not cfg.enabled:
            raise ProviderNotConfigured("it is disabled in the config", provider=name)
        with self._lock:
            p = self._built.get(name)
            if p is None:
                p = cfg.build(self._resolver)
                self._built[name] = p
            return p

    def add(self, provider: Provider) -> None:
        """Register an already built provider (tests, benchmarks, embedding)."""
        with self._lock:
            self._built[provider.name] = provider
            if provider.name not in self._configs:
                self._configs[provider.name] = LocalConfig(name=provider.name)

    def default_name(self) -> str:
        if self._default is not None:
            return self._default
        for name, cfg in self._configs.items():
            if cfg.type not in ("ollama", "local") or not cfg.enabled:
                continue
            try:
                if self.get(name).health().ok:
                    self._default = name
                    return name
            except ProviderNotConfigured:
                continue
        raise ProviderNotConfigured(
            "no local provider is available (Ollama does not answer and the embedded model "
            "is not installed)", provider="default",
            hint="run 'make deps' to install the embedded model, or start Ollama")

    def describe(self) -> list[dict[str, Any]]:
        """For GET /api/providers and 'closedpaw providers list'."""
        out = []
        for name, cfg in self._configs.items():
            d: dict[str, Any] = {"name": name, "type": cfg.type, "enabled": cfg.enabled,
                                 "default_model": cfg.model}
            try:
                p = self.get(name)
                h = p.health()
                d.update(locality=p.locality, healthy=h.ok, detail=h.detail,
                         latency_ms=h.latency_ms,
                         models=[m.name for m in p.list_models()] if h.ok else [])
            except Exception as e:  # a broken provider is reported, never fatal
                d.update(locality="unknown", healthy=False, detail=str(e), models=[])
            out.append(d)
        return out

    def close(self) -> None:
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for p in built:
            p.close()
