"""Google Gemini (``generateContent``) through the official ``google-genai`` SDK."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from closedpaw.providers.base import Accumulator, boundary, guarded_stream
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

__all__ = ["GoogleProvider"]


def _contents(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            out.append({"role": "user", "parts": [{"function_response": {
                "name": m.name or "", "response": {"content": m.content}}}]})
        elif m.role == "assistant":
            parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
            parts += [{"function_call": {"name": c.name, "args": c.arguments}}
                      for c in m.tool_calls]
            out.append({"role": "model", "parts": parts or [{"text": ""}]})
        else:
            out.append({"role": "user", "parts": [{"text": m.content}]})
    return system, out


class GoogleProvider:
    locality: Literal["local", "cloud"] = "cloud"

    def __init__(self, config: RemoteOptions, api_key: str) -> None:
        from google import genai

        self.config = config
        self.name = config.provider_name
        self.default_model = config.model
        self._client = genai.Client(api_key=api_key, http_options={
            "base_url": config.base_url, "timeout": int(config.timeout_s * 1000)})

    def _kwargs(self, messages: list[Message], tools: list[ToolSpec] | None,
                model: str | None, max_tokens: int | None) -> dict[str, Any]:
        system, contents = _contents(messages)
        cfg: dict[str, Any] = {"temperature": 0, "seed": 0,
                               "automatic_function_calling": {"disable": True}}
        if system:
            cfg["system_instruction"] = system
        if max_tokens:
            cfg["max_output_tokens"] = max_tokens
        if tools:
            cfg["tools"] = [{"function_declarations": [
                {"name": t.name, "description": t.description,
                 "parameters_json_schema": t.parameters} for t in tools]}]
        return {"model": model or self.default_model, "contents": contents, "config": cfg}

    @staticmethod
    def _parts(r: Any) -> tuple[str, list[ToolCall]]:
        text, calls = [], []
        for cand in (r.candidates or [])[:1]:
            for p in (cand.content.parts if cand.content and cand.content.parts else []):
                if p.text and not p.thought:
                    text.append(p.text)
                if p.function_call is not None:
                    args = p.function_call.args or {}
                    if not isinstance(args, dict):
                        raise ValueError("function_call args is not an object")
                    calls.append(ToolCall(p.function_call.id or f"call_{uuid.uuid4().hex[:8]}",
                                          p.function_call.name or "", dict(args)))
        return "".join(text), calls

    @staticmethod
    def _usage(r: Any) -> Usage | None:
        u = r.usage_metadata
        if u is None:
            return None
        return Usage(u.prompt_token_count or 0, u.candidates_token_count or 0)

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult:
        t0 = time.perf_counter()
        with boundary(self.name):
            kw = self._kwargs(messages, tools, model, max_tokens)
            r = self._client.models.generate_content(**kw)
            text, calls = self._parts(r)
            return ChatResult(text=text, tool_calls=tuple(calls),
                              usage=self._usage(r) or Usage(),
                              latency_ms=(time.perf_counter() - t0) * 1000,
                              model=r.model_version or kw["model"], provider=self.name)

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]:
        acc = Accumulator(self.name, model or self.default_model)
        kw = self._kwargs(messages, tools, model, max_tokens)
        for r in guarded_stream(self.name, lambda: iter(
                self._client.models.generate_content_stream(**kw))):
            with boundary(self.name):
                text, calls = self._parts(r)
            d = acc.text(text)
            if d is not None:
                yield d
            acc.calls += calls
            acc.usage = self._usage(r) or acc.usage
            acc.model = r.model_version or acc.model
        yield acc.result(tools)

    def list_models(self) -> list[ModelInfo]:
        with boundary(self.name):
            return [ModelInfo(m.name or "", {}) for m in self._client.models.list()]

    def health(self) -> Health:
        t0 = time.perf_counter()
        try:
            n = len(self.list_models())
        except Exception as e:
            return Health(False, str(e))
        return Health(True, f"{n} model(s)", (time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        self._client.close()
