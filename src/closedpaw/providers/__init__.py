"""The provider gateway: one typed interface to Ollama, OpenAI-compatible servers, Anthropic,
Google Gemini and the embedded local model (layer L2: imports only errors and settings)."""

from closedpaw.providers.config import (
    AnthropicConfig,
    GoogleConfig,
    LocalConfig,
    OllamaConfig,
    OpenAIConfig,
    ProviderConfig,
    SecretResolver,
    mapping_resolver,
    parse_provider_config,
)
from closedpaw.providers.gateway import Gateway, default_configs
from closedpaw.providers.types import (
    ChatResult,
    Delta,
    Health,
    Message,
    ModelInfo,
    Provider,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["AnthropicConfig", "ChatResult", "Delta", "Gateway", "GoogleConfig", "Health",
           "LocalConfig", "Message", "ModelInfo", "OllamaConfig", "OpenAIConfig", "Provider",
           "ProviderConfig", "SecretResolver", "ToolCall", "ToolSpec", "Usage",
           "default_configs", "mapping_resolver", "parse_provider_config"]
