"""The real embedded model (Qwen2.5-Coder 0.5B Q4_K_M on llama-cpp-python): a question that
needs code is answered through a sandboxed tool call, end to end through the API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from closedpaw.providers import Gateway, LocalConfig, Message
from closedpaw.providers.weights import DEFAULT_DIR, DEFAULT_MODEL, is_installed
from tests.integration.test_assistant import rig


def _require_model() -> None:
    if importlib.util.find_spec("llama_cpp") is None or not is_installed(DEFAULT_MODEL,
                                                                         DEFAULT_DIR):
        pytest.fail("the embedded model is not installed: run 'make deps' (it builds "
                    "llama-cpp-python and installs the weights)", pytrace=False)


def test_what_is_17_times_23_is_computed_in_the_sandbox(tmp_path: Path, runtime: str) -> None:
    _require_model()
    gw = Gateway([LocalConfig(name="local", max_tokens=200)], default="local")
    with rig(tmp_path, runtime, gateway=gw) as r, r.client() as c:
        conv = c.post("/api/conversations", json={}).json()["conversation_id"]
        events = r.turn(c, conv, "what is 17*23? use python")
        calls = [d for n, d in events if n == "tool_call"]
        assert calls and calls[0]["name"] == "run_code", events
        assert calls[0]["level"] == "medium"
        results = [d for n, d in events if n == "tool_result"]
        assert results[0]["status"] == "completed" and "391" in results[0]["content"], events
        final = events[-1]
        assert final[0] == "final" and "391" in final[1]["text"], events
        # the call streamed as text by the model is held back: never shown as answer text
        shown = "".join(d["text"] for n, d in events if n == "token")
        assert "<tool_call>" not in shown and '"arguments"' not in shown, shown
        ran = r.gate.get(calls[0]["action_id"])
        assert ran.result is not None and ran.result["isolation"]["runtime"] == runtime
        assert r.audit("assistant.turn")[0]["details"]["provider"] == "local"


def test_the_local_model_is_deterministic() -> None:
    _require_model()
    p = LocalConfig(name="local", max_tokens=24).build(None)
    try:
        msgs = [Message("user", "Name three colours.")]
        a, b = p.chat(msgs), p.chat(msgs)
        assert a.text and a.text == b.text
        assert a.usage.completion_tokens > 0
        deltas = list(p.stream(msgs))
        streamed = "".join(d.text for d in deltas if d.result is None)
        assert streamed == a.text
        last = deltas[-1].result
        assert last is not None and last.usage.completion_tokens > 0
        # the prompt counts too (the turn's token budget depends on it)
        assert last.usage.prompt_tokens == a.usage.prompt_tokens > 0, (last.usage, a.usage)
    finally:
        p.close()
