"""OpenAI-compatible Chat Completions (OpenAI, Mistral, llama.cpp's server, vLLM, LM Studio)
through the official ``openai`` SDK, by base URL.

llama.cpp's server (and small models elsewhere) often return a tool call as plain text
content: when no structured call came back, the whole text is tried as calls
(:mod:`closedpaw.providers.toolparse`), validated against the tools offered.

The request body is built here, as plain JSON, and sent with the SDK client's ``post`` (its
HTTP, auth, errors and stream parsing): ``chat.completions.create`` walks every message and
tool schema through its type-driven transform first, ~1.5 ms CPU a request with the
assistant's tools, for a body it leaves unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from closedpaw.providers.base import (
    Accumulator,
    boundary,
    guarded_stream,
    text_calls,
    tool_schema,
)
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
    is_loopback_url,
)

__all__ = ["OpenAIProvider", "openai_messages"]

#: what ``chat.completions.create`` asks of the client: the API key as a bearer token
_AUTH: Any = {"security": {"bearer_auth": True}}


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name,
                                             "arguments": json.dumps(c.arguments)}}
                               for c in m.tool_calls]
        if m.role == "tool":
            d["tool_call_id"] = m.tool_call_id or ""
        out.append(d)
    return out


def _args(raw: str | None, provider: str) -> dict[str, Any]:
    try:
        v = json.loads(raw or "{}")
    except ValueError:
        v = None
    if not isinstance(v, dict):
        raise map_error(ValueError(f"tool call arguments are not a JSON object: "
                                   f"{(raw or '')[:200]!r}"), provider)
    return v


class OpenAIProvider:
    def __init__(self, config: RemoteOptions, api_key: str | None) -> None:
        import openai

        self.config = config
        self.name = config.provider_name
        self.default_model = config.model
        self.locality: Literal["local", "cloud"] = (
            "local" if is_loopback_url(config.base_url) else "cloud")
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        self._client = openai.OpenAI(base_url=config.base_url, api_key=api_key or "none",
                                     timeout=config.timeout_s, max_retries=0)
        self._types = ChatCompletion, openai.Stream[ChatCompletionChunk], ChatCompletionChunk

    def _post(self, body: dict[str, Any], *, stream: bool) -> Any:
        """POST /chat/completions with ``body`` as it is (see the module's docstring)."""
        done, chunks, chunk = self._types
        if stream:
            return self._client.post("/chat/completions", cast_to=chunk,
                                     body={**body, "stream": True}, options=_AUTH, stream=True,
                                     stream_cls=chunks)
        return self._client.post("/chat/completions", cast_to=done, body=body, options=_AUTH)

    def _kwargs(self, messages: list[Message], tools: list[ToolSpec] | None,
                model: str | None, max_tokens: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model or self.default_model,
                              "messages": openai_messages(messages), "temperature": 0,
                              "seed": 0}
        if tools:
            kw["tools"] = [tool_schema(t) for t in tools]
        if max_tokens:
            kw["max_tokens"] = max_tokens
        return kw

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult:
        t0 = time.perf_counter()
        with boundary(self.name):
            r = self._post(self._kwargs(messages, tools, model, max_tokens), stream=False)
            if not r.choices:
                raise ValueError("the answer has no choices")
            msg = r.choices[0].message
            calls = [ToolCall(c.id, c.function.name, _args(c.function.arguments, self.name))
                     for c in (msg.tool_calls or []) if c.type == "function"]
            text = msg.content or ""
            if not calls:
                parsed = text_calls(text, tools)
                if parsed:
                    calls, text = parsed, ""
            u = r.usage
            return ChatResult(
                text=text, tool_calls=tuple(calls),
                usage=Usage(u.prompt_tokens, u.completion_tokens) if u else Usage(),
                latency_ms=(time.perf_counter() - t0) * 1000, model=r.model or "",
                provider=self.name)

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]:
        acc = Accumulator(self.name, model or self.default_model, hold_calls=bool(tools))
        kw = self._kwargs(messages, tools, model, max_tokens)
        pending: dict[int, dict[str, str]] = {}
        kw["stream_options"] = {"include_usage": True}
        make = lambda: iter(self._post(kw, stream=True))  # noqa: E731
        for chunk in guarded_stream(self.name, make):
            if chunk.model:
                acc.model = chunk.model
            if chunk.usage:
                acc.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            for ch in chunk.choices:
                d = acc.text(ch.delta.content or "")
                if d is not None:
                    yield d
                for tc in ch.delta.tool_calls or []:
                    slot = pending.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["args"] += tc.function.arguments or ""
        acc.calls = [ToolCall(s["id"] or f"call_{i}", s["name"], _args(s["args"], self.name))
                     for i, s in sorted(pending.items())]
        yield from acc.finish(tools)

    def list_models(self) -> list[ModelInfo]:
        with boundary(self.name):
            return [ModelInfo(m.id, {"owned_by": getattr(m, "owned_by", None)})
                    for m in self._client.models.list()]

    def health(self) -> Health:
        t0 = time.perf_counter()
        try:
            n = len(self.list_models())
        except Exception as e:
            return Health(False, str(e))
        return Health(True, f"{n} model(s)", (time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        self._client.close()
