"""The provider interface: typed messages in, a typed result (or stream of deltas) out.

Every adapter (ollama, openai-compatible, anthropic, google, local) implements
:class:`Provider`; the assistant sees nothing else. Calls are synchronous: a caller on an event
loop runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "AnthropicOptions",
    "ChatResult",
    "Delta",
    "Health",
    "LocalOptions",
    "Message",
    "ModelInfo",
    "Provider",
    "RemoteOptions",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "is_loopback_url",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for. ``arguments`` is a JSON object (already parsed)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None   # role == "tool": the call it answers
    name: str | None = None           # role == "tool": the tool's name


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    latency_ms: float
    model: str
    provider: str
    ttft_ms: float | None = None   # streaming only: time to the first token

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tool_calls"] = [asdict(c) for c in self.tool_calls]
        return d


@dataclass(frozen=True)
class Delta:
    """One streamed piece: a text fragment, or (last) the whole result."""

    text: str = ""
    result: ChatResult | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    latency_ms: float | None = None


@runtime_checkable
class Provider(Protocol):
    """What every adapter does. ``locality`` is "local" (data stays on this machine) or
    "cloud"."""

    name: str
    locality: Literal["local", "cloud"]
    default_model: str

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult: ...

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]: ...

    def list_models(self) -> list[ModelInfo]: ...

    def health(self) -> Health: ...

    def close(self) -> None: ...


# -- what an adapter reads of its config (the config classes in config.py satisfy these; the
# adapters never import config.py, which builds them) ---------------------------------------
class RemoteOptions(Protocol):
    """A provider reached over HTTP."""

    @property
    def provider_name(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...


class AnthropicOptions(RemoteOptions, Protocol):
    """Anthropic's Messages API needs a max_tokens on every call."""

    @property
    def max_tokens(self) -> int: ...


class LocalOptions(Protocol):
    """The embedded model."""

    @property
    def provider_name(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def model_path(self) -> Path | None: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def max_tokens(self) -> int: ...


def is_loopback_url(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
