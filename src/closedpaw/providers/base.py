"""Shared pieces of the adapters: the error boundary and the streaming accumulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from closedpaw.errors import ProviderBadOutput
from closedpaw.providers.errors import TABLE, map_error
from closedpaw.providers.toolparse import parse_text_tool_calls
from closedpaw.providers.types import ChatResult, Delta, ToolCall, ToolSpec, Usage

__all__ = ["Accumulator", "boundary", "guarded_stream", "text_calls"]

T = TypeVar("T")


@contextmanager
def boundary(provider: str, *, retry_after: Callable[[], Any] | None = None
             ) -> Iterator[None]:
    """Foreign exceptions raised inside become ours (one table: providers.errors).
    ``retry_after`` supplies a 429's Retry-After when the SDK's exception lost it."""
    try:
        yield
    except Exception as e:
        raise map_error(e, provider, retry_after=retry_after() if retry_after else None
                        ) from e


def guarded_stream(provider: str, make: Callable[[], Iterator[T]], *,
                   retry_after: Callable[[], Any] | None = None) -> Iterator[T]:
    """Iterate ``make()``, translating foreign errors raised at any step. A stream that
    carried no event at all (say a JSON body where a stream was asked for) is bad output,
    never an empty answer."""
    with boundary(provider, retry_after=retry_after):
        it = make()
    n = 0
    while True:
        with boundary(provider, retry_after=retry_after):
            try:
                item = next(it)
            except StopIteration:
                if n == 0:
                    raise ProviderBadOutput("the stream carried no events", provider=provider,
                                            hint=TABLE["malformed"][1]) from None
                return
        n += 1
        yield item


def text_calls(text: str, tools: list[ToolSpec] | None) -> list[ToolCall] | None:
    if not tools:
        return None
    return parse_text_tool_calls(text, {t.name for t in tools})


class Accumulator:
    """Collects a stream into the final :class:`ChatResult`."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.start = time.perf_counter()
        self.ttft: float | None = None
        self.parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.usage = Usage()

    def text(self, piece: str) -> Delta | None:
        if not piece:
            return None
        if self.ttft is None:
            self.ttft = (time.perf_counter() - self.start) * 1000
        self.parts.append(piece)
        return Delta(text=piece)

    def result(self, tools: list[ToolSpec] | None = None, *, parse_text: bool = False
               ) -> Delta:
        text = "".join(self.parts)
        calls = list(self.calls)
        if not calls and parse_text:
            parsed = text_calls(text, tools)
            if parsed:
                calls, text = parsed, ""
        return Delta(result=ChatResult(
            text=text, tool_calls=tuple(calls), usage=self.usage,
            latency_ms=(time.perf_counter() - self.start) * 1000, model=self.model,
            provider=self.provider, ttft_ms=self.ttft))


def tool_schema(t: ToolSpec) -> dict[str, Any]:
    """The OpenAI/Ollama function-tool shape."""
    return {"type": "function", "function": {"name": t.name, "description": t.description,
                                             "parameters": t.parameters}}
