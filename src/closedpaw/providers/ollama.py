"""Ollama's native API (``/api/chat`` with tools and streaming, ``/api/tags``) through the
official ``ollama`` SDK."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from closedpaw.providers.base import Accumulator, boundary, guarded_stream, tool_schema
from closedpaw.providers.errors import map_error
from closedpaw.providers.types import (
    ChatResult,
    Delta,
    Health,
    Message,
    ModelInfo,
    RemoteOptions,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["OllamaProvider"]


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]
        if m.role == "tool" and m.name:
            d["tool_name"] = m.name
        out.append(d)
    return out


class OllamaProvider:
    locality: Literal["local", "cloud"] = "local"

    def __init__(self, config: RemoteOptions) -> None:
        import ollama

        self.config = config
        self.name = config.provider_name
        self.default_model = config.model
        # the SDK drops the response from its ResponseError: keep a 429's Retry-After here
        self._retry_after = threading.local()

        def remember(response: Any) -> None:
            if response.status_code == 429:
                self._retry_after.value = response.headers.get("retry-after")
        self._client = ollama.Client(host=config.base_url, timeout=config.timeout_s,
                                     trust_env=False, event_hooks={"response": [remember]})

    def _boundary(self) -> Any:
        return boundary(self.name, retry_after=lambda: getattr(self._retry_after, "value",
                                                               None))

    def _calls(self, msg: Any) -> list[ToolCall]:
        out = []
        for i, c in enumerate(getattr(msg, "tool_calls", None) or []):
            args = c.function.arguments
            if not isinstance(args, dict):
                raise map_error(ValueError("tool call arguments are not an object"), self.name)
            out.append(ToolCall(id=f"call_{i}", name=c.function.name, arguments=dict(args)))
        return out

    def _kwargs(self, messages: list[Message], tools: list[ToolSpec] | None,
                model: str | None, max_tokens: int | None) -> dict[str, Any]:
        opts: dict[str, Any] = {"temperature": 0, "seed": 0}
        if max_tokens:
            opts["num_predict"] = max_tokens
        return {"model": model or self.default_model, "messages": _messages(messages),
                "tools": [tool_schema(t) for t in tools] if tools else None, "options": opts}

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult:
        t0 = time.perf_counter()
        with self._boundary():
            r = self._client.chat(**self._kwargs(messages, tools, model, max_tokens))
            calls = self._calls(r.message)
            return ChatResult(
                text=r.message.content or "", tool_calls=tuple(calls),
                usage=Usage(r.prompt_eval_count or 0, r.eval_count or 0),
                latency_ms=(time.perf_counter() - t0) * 1000, model=r.model or "",
                provider=self.name)

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]:
        acc = Accumulator(self.name, model or self.default_model)
        kw = self._kwargs(messages, tools, model, max_tokens)
        for chunk in guarded_stream(self.name, lambda: iter(self._client.chat(stream=True, **kw)),
                                    retry_after=lambda: getattr(self._retry_after, "value",
                                                                None)):
            d = acc.text(chunk.message.content or "")
            if d is not None:
                yield d
            acc.calls += self._calls(chunk.message)
            if chunk.done:
                acc.model = chunk.model or acc.model
                acc.usage = Usage(chunk.prompt_eval_count or 0, chunk.eval_count or 0)
        yield acc.result(tools)

    def list_models(self) -> list[ModelInfo]:
        with boundary(self.name):
            return [ModelInfo(m.model or "", {"size": m.size})
                    for m in self._client.list().models]

    def health(self) -> Health:
        t0 = time.perf_counter()
        try:
            n = len(self.list_models())
        except Exception as e:
            return Health(False, str(e))
        return Health(True, f"{n} model(s)", (time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        self._client._client.close()
