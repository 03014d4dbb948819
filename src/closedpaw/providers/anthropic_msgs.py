"""Anthropic Messages through the official ``anthropic`` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from closedpaw.providers.base import Accumulator, boundary, guarded_stream
from closedpaw.providers.errors import map_error
from closedpaw.providers.types import (
    AnthropicOptions,
    ChatResult,
    Delta,
    Health,
    Message,
    ModelInfo,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["AnthropicProvider"]


def _split(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "",
                     "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content \
                else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return system, out


class AnthropicProvider:
    locality: Literal["local", "cloud"] = "cloud"

    def __init__(self, config: AnthropicOptions, api_key: str) -> None:
        import anthropic

        self.config = config
        self.name = config.provider_name
        self.default_model = config.model
        self._client = anthropic.Anthropic(api_key=api_key, base_url=config.base_url,
                                           timeout=config.timeout_s, max_retries=0)

    def _kwargs(self, messages: list[Message], tools: list[ToolSpec] | None,
                model: str | None, max_tokens: int | None) -> dict[str, Any]:
        system, msgs = _split(messages)
        kw: dict[str, Any] = {"model": model or self.default_model, "messages": msgs,
                              "max_tokens": max_tokens or self.config.max_tokens}
        if system:
            kw["system"] = system
        if tools:
            kw["tools"] = [{"name": t.name, "description": t.description,
                            "input_schema": t.parameters} for t in tools]
        return kw

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult:
        t0 = time.perf_counter()
        with boundary(self.name):
            r = self._client.messages.create(**self._kwargs(messages, tools, model,
                                                            max_tokens))
            text = "".join(b.text for b in r.content if b.type == "text")
            calls = []
            for b in r.content:
                if b.type == "tool_use":
                    if not isinstance(b.input, dict):
                        raise ValueError("tool_use input is not an object")
                    calls.append(ToolCall(b.id, b.name, dict(b.input)))
            return ChatResult(text=text, tool_calls=tuple(calls),
                              usage=Usage(r.usage.input_tokens, r.usage.output_tokens),
                              latency_ms=(time.perf_counter() - t0) * 1000, model=r.model,
                              provider=self.name)

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]:
        acc = Accumulator(self.name, model or self.default_model)
        kw = self._kwargs(messages, tools, model, max_tokens)
        blocks: dict[int, dict[str, str]] = {}
        inp = out = 0
        for ev in guarded_stream(self.name, lambda: iter(self._client.messages.create(
                stream=True, **kw))):
            if ev.type == "message_start":
                acc.model = ev.message.model or acc.model
                inp = ev.message.usage.input_tokens
            elif ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                blocks[ev.index] = {"id": ev.content_block.id, "name": ev.content_block.name,
                                    "json": ""}
            elif ev.type == "content_block_delta":
                if ev.delta.type == "text_delta":
                    d = acc.text(ev.delta.text)
                    if d is not None:
                        yield d
                elif ev.delta.type == "input_json_delta" and ev.index in blocks:
                    blocks[ev.index]["json"] += ev.delta.partial_json
            elif ev.type == "message_delta":
                out = ev.usage.output_tokens
        for _, b in sorted(blocks.items()):
            try:
                args = json.loads(b["json"] or "{}")
            except ValueError:
                args = None
            if not isinstance(args, dict):
                raise map_error(ValueError("tool_use input is not a JSON object"), self.name)
            acc.calls.append(ToolCall(b["id"], b["name"], args))
        acc.usage = Usage(inp, out)
        yield acc.result(tools)

    def list_models(self) -> list[ModelInfo]:
        with boundary(self.name):
            return [ModelInfo(m.id, {}) for m in self._client.models.list()]

    def health(self) -> Health:
        t0 = time.perf_counter()
        try:
            n = len(self.list_models())
        except Exception as e:
            return Health(False, str(e))
        return Health(True, f"{n} model(s)", (time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        self._client.close()
