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


# openings a tool call written as text may start with (toolparse's accepted forms)
_CALL_OPENINGS = ("{", "[", "<tool_call>", "```")


def _may_be_call(text: str) -> bool:
    """Whether ``text`` (what streamed so far) could still turn out to be tool calls."""
    body = text.lstrip()
    return not body or any(body.startswith(o) or o.startswith(body) for o in _CALL_OPENINGS)


class Accumulator:
    """Collects a stream into the final :class:`ChatResult`.

    With ``hold_calls`` (a provider whose tool calls come back as text, tools offered), the
    pieces are held back while what streamed so far could still be a tool call: a call is
    never shown as answer text, and prose streams as soon as it is clearly prose. Such
    providers end with :meth:`finish`, which releases held text that was not a call."""

    def __init__(self, provider: str, model: str, *, hold_calls: bool = False) -> None:
        self.provider = provider
        self.model = model
        self.start = time.perf_counter()
        self.ttft: float | None = None
        self.parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.usage = Usage()
        self._holding = hold_calls
        self._held = 0          # how many of parts are held back

    def text(self, piece: str) -> Delta | None:
        if not piece:
            return None
        if self.ttft is None:
            self.ttft = (time.perf_counter() - self.start) * 1000
        self.parts.append(piece)
        if self._holding:
            if _may_be_call("".join(self.parts)):
                self._held += 1
                return None
            self._holding = False
            out, self._held = "".join(self.parts[-1 - self._held:]), 0
            return Delta(text=out)
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

    def finish(self, tools: list[ToolSpec] | None) -> Iterator[Delta]:
        """The held-back text when it was not a call after all, then the result (text
        tool calls parsed)."""
        final = self.result(tools, parse_text=True)
        assert final.result is not None
        if self._held and not final.result.tool_calls:
            yield Delta(text="".join(self.parts[-self._held:]))
        self._held = 0
        yield final


def tool_schema(t: ToolSpec) -> dict[str, Any]:
    """The OpenAI/Ollama function-tool shape."""
    return {"type": "function", "function": {"name": t.name, "description": t.description,
                                             "parameters": t.parameters}}
