"""The embedded model: llama-cpp-python in one worker thread of this process.

The model is loaded on first use, in the worker (never on an event loop), and every call runs
there: llama.cpp contexts are not thread-safe, and the API server stays responsive. Sampling
is greedy (temperature 0) with a fixed seed and thread count, so an answer is reproducible
across processes.

Tools are offered the way Qwen2.5 was trained: described in the system prompt, called with
``<tool_call>{...}</tool_call>``, answered with ``<tool_response>`` blocks. The model's text is
parsed tolerantly and validated strictly (:mod:`closedpaw.providers.toolparse`).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from closedpaw.errors import ProviderNotConfigured, ProviderUnavailable
from closedpaw.providers.base import Accumulator, boundary, text_calls
from closedpaw.providers.types import (
    ChatResult,
    Delta,
    Health,
    LocalOptions,
    Message,
    ModelInfo,
    ToolSpec,
    Usage,
)

__all__ = ["DEFAULT_MODELS_DIR", "LocalProvider", "local_messages"]

DEFAULT_MODELS_DIR = Path("/var/lib/closedpaw/models")
#: the interpreter's thread switch interval once a model is loaded (see LocalProvider._load)
SWITCH_INTERVAL_S = 0.0005

_TOOLS_PROMPT = """

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def local_messages(messages: list[Message], tools: list[ToolSpec] | None
                   ) -> list[dict[str, str]]:
    """Our messages in the plain system/user/assistant roles of the model's chat template."""
    out: list[dict[str, str]] = []
    system = "\n\n".join(m.content for m in messages if m.role == "system") or \
        "You are a helpful assistant."
    if tools:
        system += _TOOLS_PROMPT.format(tools="\n".join(json.dumps(
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}}) for t in tools))
    out.append({"role": "system", "content": system})
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = f"<tool_response>\n{m.content}\n</tool_response>"
            if out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif m.role == "assistant" and m.tool_calls:
            calls = "\n".join("<tool_call>\n" + json.dumps({"name": c.name,
                                                            "arguments": c.arguments})
                              + "\n</tool_call>" for c in m.tool_calls)
            out.append({"role": "assistant",
                        "content": (m.content + "\n" if m.content else "") + calls})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class LocalProvider:
    locality: Literal["local", "cloud"] = "local"

    def __init__(self, config: LocalOptions) -> None:
        self.config = config
        self.name = config.provider_name
        self.default_model = config.model
        self.path = config.model_path or DEFAULT_MODELS_DIR / f"{config.model}.gguf"
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="closedpaw-llm")
        self._llm: Any = None
        self._lock = threading.Lock()
        self.load_ms: float | None = None

    # -- the worker side -------------------------------------------------------------------
    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        if not self.path.is_file():
            raise ProviderNotConfigured(
                f"the model file {self.path} is not installed", provider=self.name,
                hint="run 'python -m closedpaw.providers.weights' (make deps does it)")
        try:
            import llama_cpp  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ProviderNotConfigured(
                "llama-cpp-python is not installed", provider=self.name,
                hint="run 'make deps' (CMAKE_ARGS=-DLLAVA_BUILD=OFF pip install "
                     "llama-cpp-python==0.3.36)") from None
        # the model's worker thread runs python between its C calls (sampling, detokenizing):
        # with the default 5 ms switch interval, every hand-off of a token to the server's
        # threads waited up to 5 ms for the GIL (measured: first token to client 9.5 ms,
        # 1.8 ms at 0.5 ms). Process-wide; only ever lowered.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        t0 = time.perf_counter()
        with boundary(self.name):
            self._llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=self.config.n_ctx,
                                        n_threads=self.config.n_threads,
                                        n_threads_batch=self.config.n_threads,
                                        seed=self.config.seed, verbose=False)
        self.load_ms = (time.perf_counter() - t0) * 1000
        return self._llm

    def _kwargs(self, messages: list[Message], tools: list[ToolSpec] | None,
                max_tokens: int | None) -> dict[str, Any]:
        return {"messages": local_messages(messages, tools),
                "temperature": self.config.temperature, "seed": self.config.seed,
                "max_tokens": max_tokens or self.config.max_tokens}

    def _run(self, kw: dict[str, Any]) -> dict[str, Any]:
        llm = self._load()
        with boundary(self.name):
            llm.set_seed(self.config.seed)
            out: dict[str, Any] = llm.create_chat_completion(**kw)
            return out

    def _run_stream(self, kw: dict[str, Any], q: queue.Queue[Any],
                    stop: threading.Event) -> None:
        try:
            llm = self._load()
            with boundary(self.name):
                llm.set_seed(self.config.seed)
                for chunk in llm.create_chat_completion(stream=True, **kw):
                    if stop.is_set():
                        break
                    q.put(("chunk", chunk))
                context = int(getattr(llm, "n_tokens", 0) or 0)
            q.put(("end", context))
        except Exception as e:
            q.put(("error", e))

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        try:
            return self._worker.submit(fn, *args)
        except RuntimeError:
            raise ProviderUnavailable("the local model was shut down",
                                      provider=self.name) from None

    # -- the interface ---------------------------------------------------------------------
    def load(self) -> float:
        """Load the model now (in the worker); returns the load time in ms."""
        self._submit(self._load).result()
        return self.load_ms or 0.0

    def chat(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
             model: str | None = None, max_tokens: int | None = None) -> ChatResult:
        self._check_model(model)
        t0 = time.perf_counter()
        r = self._submit(self._run, self._kwargs(messages, tools, max_tokens)).result()
        with boundary(self.name):
            text = r["choices"][0]["message"].get("content") or ""
            u = r.get("usage") or {}
        calls = text_calls(text, tools) or []
        return ChatResult(text="" if calls else text, tool_calls=tuple(calls),
                          usage=Usage(int(u.get("prompt_tokens", 0)),
                                      int(u.get("completion_tokens", 0))),
                          latency_ms=(time.perf_counter() - t0) * 1000,
                          model=self.default_model, provider=self.name)

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None, *,
               model: str | None = None, max_tokens: int | None = None) -> Iterator[Delta]:
        self._check_model(model)
        acc = Accumulator(self.name, self.default_model, hold_calls=bool(tools))
        q: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        self._submit(self._run_stream, self._kwargs(messages, tools, max_tokens), q, stop)
        n = context = 0
        try:
            while True:
                kind, item = q.get()
                if kind == "error":
                    raise item
                if kind == "end":
                    context = int(item)
                    break
                with boundary(self.name):
                    piece = item["choices"][0]["delta"].get("content") or ""
                if piece:
                    n += 1
                d = acc.text(piece)
                if d is not None:
                    yield d
        finally:
            stop.set()
        # streamed chunks carry no usage: the completion tokens are the streamed pieces, and
        # the prompt the rest of the context the model holds after the call
        acc.usage = Usage(max(0, context - n), n)
        yield from acc.finish(tools)

    def _check_model(self, model: str | None) -> None:
        if model and model != self.default_model:
            from closedpaw.errors import ModelNotFound

            raise ModelNotFound(f"only {self.default_model!r} is loaded", provider=self.name,
                                hint="configure another local provider for another model")

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(self.default_model, {"path": str(self.path),
                                               "installed": self.path.is_file()})]

    def health(self) -> Health:
        if not self.path.is_file():
            return Health(False, f"{self.path} is not installed")
        try:
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                return Health(False, "llama-cpp-python is not installed")
        except ImportError:
            return Health(False, "llama-cpp-python is not installed")
        return Health(True, "loaded" if self._llm is not None else "installed, not loaded")

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._llm = None
