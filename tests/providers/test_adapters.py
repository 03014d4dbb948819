"""Each adapter (official SDK inside) against a scripted server speaking that provider's wire
protocol on 127.0.0.1: plain chat, streaming, tool calls, 401, 429 + Retry-After, 500,
timeout, malformed JSON, unreachable."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from closedpaw.errors import (
    ProviderAuthError,
    ProviderBadOutput,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from closedpaw.providers import (
    AnthropicConfig,
    GoogleConfig,
    Message,
    OllamaConfig,
    OpenAIConfig,
    Provider,
    ToolSpec,
    mapping_resolver,
)
from tests.provider_servers import ProviderServer, Reply

KINDS = ["ollama", "openai", "anthropic", "google"]
RESOLVER = mapping_resolver({"CLOSEDPAW_SECRET_TEST_KEY": "sk-test-123"})
TOOLS = [ToolSpec("run_code", "Run code in a sandbox.", {
    "type": "object", "properties": {"language": {"type": "string"},
                                     "code": {"type": "string"}},
    "required": ["language", "code"]})]
MSGS = [Message("system", "Be brief."), Message("user", "Say hello.")]


def build(kind: str, url: str, timeout_s: float = 10.0) -> Provider:
    if kind == "ollama":
        return OllamaConfig(name="t", base_url=url, model="qwen2.5-coder:0.5b",
                            timeout_s=timeout_s).build(RESOLVER)
    if kind == "openai":
        return OpenAIConfig(name="t", base_url=f"{url}/v1", model="scripted-model",
                            api_key="secret:TEST_KEY", timeout_s=timeout_s).build(RESOLVER)
    if kind == "anthropic":
        return AnthropicConfig(name="t", base_url=url, model="claude-scripted",
                               api_key="secret:TEST_KEY", timeout_s=timeout_s).build(RESOLVER)
    return GoogleConfig(name="t", base_url=url, model="gemini-scripted",
                        api_key="secret:TEST_KEY", timeout_s=timeout_s).build(RESOLVER)


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[ProviderServer, Provider]]:
    srv = ProviderServer(request.param)
    prov = build(request.param, srv.url)
    try:
        yield srv, prov
    finally:
        prov.close()
        srv.close()


def _auth_sent(srv: ProviderServer) -> str:
    h = srv.seen[-1].headers
    return h.get("authorization") or h.get("x-api-key") or h.get("x-goog-api-key") or ""


def test_plain_chat(pair: tuple[ProviderServer, Provider]) -> None:
    srv, p = pair
    r = p.chat(MSGS)
    assert r.text == "Hello from the scripted model."
    assert r.tool_calls == ()
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7)
    assert r.model and r.provider == "t" and r.latency_ms > 0
    sent = srv.seen[-1].body
    assert "Say hello." in str(sent) and "Be brief." in str(sent)
    if srv.kind != "ollama":
        assert "sk-test-123" in _auth_sent(srv)   # the secret: reference was resolved


def test_streaming(pair: tuple[ProviderServer, Provider]) -> None:
    srv, p = pair
    deltas = list(p.stream(MSGS))
    if srv.kind != "ollama":
        assert "sk-test-123" in _auth_sent(srv)   # the key goes with a streamed request too
    pieces = [d.text for d in deltas if d.result is None]
    assert len(pieces) >= 3 and "".join(pieces) == "Hello from the scripted model."
    final = deltas[-1].result
    assert final is not None and final.text == "Hello from the scripted model."
    assert final.usage.completion_tokens == 7 and final.ttft_ms is not None


@pytest.mark.parametrize("streaming", [False, True])
def test_tool_calls(pair: tuple[ProviderServer, Provider], streaming: bool) -> None:
    srv, p = pair
    srv.mode = "tools"
    if streaming:
        r = list(p.stream(MSGS, TOOLS))[-1].result
        assert r is not None
    else:
        r = p.chat(MSGS, TOOLS)
    assert [(c.name, c.arguments) for c in r.tool_calls] == [
        ("run_code", {"language": "python", "code": "print(42)"})]
    assert "run_code" in str(srv.seen[-1].body)   # the tool definitions were sent


def test_tool_results_go_back(pair: tuple[ProviderServer, Provider]) -> None:
    srv, p = pair
    srv.mode = "tools"
    first = p.chat(MSGS, TOOLS)
    call = first.tool_calls[0]
    srv.script = [Reply(text="It printed 42.")]
    second = p.chat([*MSGS, Message("assistant", "", tool_calls=(call,)),
                     Message("tool", "42\n", tool_call_id=call.id, name=call.name)], TOOLS)
    assert second.text == "It printed 42."
    assert "42\\n" in str(srv.seen[-1].body) or "42\n" in str(srv.seen[-1].body)


@pytest.mark.parametrize(("mode", "cls"), [
    ("401", ProviderAuthError), ("429", ProviderRateLimited), ("500", ProviderUnavailable),
    ("malformed", ProviderBadOutput)])
@pytest.mark.parametrize("streaming", [False, True])
def test_errors_map_to_our_tree(pair: tuple[ProviderServer, Provider], mode: str,
                                cls: type[ProviderError], streaming: bool) -> None:
    srv, p = pair
    srv.mode = mode
    with pytest.raises(ProviderError) as ei:
        if streaming:
            list(p.stream(MSGS))
        else:
            p.chat(MSGS)
    e = ei.value
    assert isinstance(e, cls), f"{type(e).__name__}: {e}"
    assert e.code.startswith("provider_") and e.provider == "t" and e.hint
    if isinstance(e, ProviderRateLimited):
        assert e.retry_after == 7.0


def test_timeout(request: pytest.FixtureRequest) -> None:
    for kind in KINDS:
        with ProviderServer(kind) as srv:
            srv.mode = "timeout"
            p = build(kind, srv.url, timeout_s=0.5)
            try:
                with pytest.raises(ProviderTimeout):
                    p.chat(MSGS)
            finally:
                p.close()


def test_unreachable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    for kind in KINDS:
        p = build(kind, f"http://127.0.0.1:{port}", timeout_s=2)
        try:
            with pytest.raises(ProviderUnavailable) as ei:
                p.chat(MSGS)
            assert "base_url" in str(ei.value)
            h = p.health()
            assert not h.ok
        finally:
            p.close()


def test_list_models_and_health(pair: tuple[ProviderServer, Provider]) -> None:
    _srv, p = pair
    names = [m.name for m in p.list_models()]
    assert names and all(isinstance(n, str) and n for n in names)
    h = p.health()
    assert h.ok and h.latency_ms is not None


def test_openai_text_tool_calls_like_llama_cpp_server() -> None:
    """llama.cpp's server returns a call as plain content: parsed and validated; text that is
    not wholly a call to an offered tool stays text."""
    with ProviderServer("openai") as srv:
        p = build("openai", srv.url)
        try:
            srv.script = [Reply(text='<tool_call>\n{"name": "run_code", "arguments": '
                                     '{"language": "python", "code": "17*23"}}\n</tool_call>')]
            r = p.chat(MSGS, TOOLS)
            assert [c.name for c in r.tool_calls] == ["run_code"] and r.text == ""
            srv.script = [Reply(text='Sure! {"name": "run_code", "arguments": {}}')]
            r = p.chat(MSGS, TOOLS)
            assert r.tool_calls == () and r.text.startswith("Sure!")
            srv.script = [Reply(text='{"name": "delete_everything", "arguments": {}}')]
            r = p.chat(MSGS, TOOLS)
            assert r.tool_calls == ()
        finally:
            p.close()


def test_openai_bad_tool_arguments_are_bad_output() -> None:
    with ProviderServer("openai") as srv:
        p = build("openai", srv.url)
        try:
            srv.script = [Reply(calls=[("run_code", {})], raw_arguments="{not json")]
            with pytest.raises(ProviderBadOutput):
                p.chat(MSGS, TOOLS)
        finally:
            p.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_stream_without_events_is_bad_output(kind: str) -> None:
    """A 200 whose body is JSON, not the stream asked for, must not pass as an empty answer.
    (Ollama's NDJSON and google-genai read such a body as a one-event stream: a real answer.)"""
    with ProviderServer(kind) as srv:
        p = build(kind, srv.url)
        try:
            srv.mode = "nonstream"
            with pytest.raises(ProviderBadOutput):
                list(p.stream(MSGS))
        finally:
            p.close()


def test_a_text_tool_call_never_streams_as_answer_text() -> None:
    """llama.cpp's server (and the embedded model) write calls as text: while what streamed
    so far could still be a call it is held back, so a call is never shown as the answer;
    prose streams piece by piece as soon as it is clearly prose."""
    call = ('<tool_call>\n{"name": "run_code", "arguments": '
            '{"language": "python", "code": "17*23"}}\n</tool_call>')
    with ProviderServer("openai") as srv:
        p = build("openai", srv.url)
        try:
            for text in (call, '  {"name": "run_code", "arguments": {"language": "python", '
                               '"code": "1"}}'):
                srv.script = [Reply(text=text)]
                out = list(p.stream(MSGS, TOOLS))
                assert [d.text for d in out if d.text] == []
                assert out[-1].result is not None
                assert [c.name for c in out[-1].result.tool_calls] == ["run_code"]
            prose = "The answer is 391, computed with python in a sandbox."
            srv.script = [Reply(text=prose)]
            out = list(p.stream(MSGS, TOOLS))
            pieces = [d.text for d in out if d.text]
            assert "".join(pieces) == prose and len(pieces) > 3
            # a JSON answer that is not a call of an offered tool: released whole at the end
            srv.script = [Reply(text='{"name": "delete_everything", "arguments": {}}')]
            out = list(p.stream(MSGS, TOOLS))
            assert "".join(d.text for d in out if d.text) == \
                '{"name": "delete_everything", "arguments": {}}'
            assert out[-1].result is not None and out[-1].result.tool_calls == ()
        finally:
            p.close()
