"""The assistant, side by side with its floors, in one run.

    sudo .venv/bin/python benchmarks/assistant.py [--runs N] [--tokens N] [--json PATH]

* ``gateway overhead``: one non-streaming chat through our OpenAI-compatible adapter against
  the bare ``openai`` SDK calling the same scripted server on 127.0.0.1 (target <= 2 ms
  more, median).
* ``tool round trip`` (runc, runsc): from the scripted model's answer carrying a tool call
  leaving the server to the model's next request (with the result) arriving: SDK parse ->
  loop -> gate (submit, audit, rules) -> sandbox -> result stored -> next request. No model
  time inside. Floor: what the executor itself does, by the sandbox library directly: take a
  pooled sandbox whose python kernel runs, run the code in it (its delete goes to the
  background). Targets: <= 15 ms runc, <= 40 ms runsc, as totals (see docs/assistant.md).
* ``local model``: load time, tokens/s and time to first token of the embedded model called
  directly, against the same prompt through the API (POST a message, first ``token`` SSE
  event), in rounds rotating the sides on the same model instance (``--model-runs``); the
  overhead as the difference of medians and as the median of the rounds' differences
  (target <= +5 ms). Floor beside it: a bare HTTP SSE route (plain Starlette under the same
  uvicorn config streaming the same model's tokens: no authentication, record, screening or
  middleware), which splits the overhead into the HTTP transport's and ours.

Writes JSON to benchmarks/results/assistant.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import REPO, machine_info, summary, timed

from closedpaw.assistant import SYSTEM_PROMPT, Assistant, tool_specs
from closedpaw.audit import AuditEvent
from closedpaw.gate import ActionRequest, Gate
from closedpaw.providers import Gateway, LocalConfig, Message, OpenAIConfig
from closedpaw.security import Principal
from closedpaw.settings import Settings
from tests.provider_servers import ProviderServer, Reply

DEFAULT_JSON = REPO / "benchmarks" / "results" / "assistant.json"
CGROUP = "closedpaw-bench-assistant"
MSGS = [Message("system", "Be brief."), Message("user", "Say hello.")]


def gateway_overhead(runs: int) -> dict[str, Any]:
    import openai

    with ProviderServer("openai") as srv:
        bare = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)
        ours = OpenAIConfig(name="b", base_url=f"{srv.url}/v1", model="scripted-model"
                            ).build(None)
        plain = [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Say hello."}]
        try:
            for _ in range(5):   # warm both connections
                bare.chat.completions.create(model="scripted-model", messages=plain,  # type: ignore[arg-type]
                                             temperature=0, seed=0)
                ours.chat(MSGS)
            a, b = [], []
            for _ in range(runs):   # interleaved, so drift hits both alike
                a.append(timed(lambda: bare.chat.completions.create(
                    model="scripted-model", messages=plain, temperature=0,  # type: ignore[arg-type]
                    seed=0))[0])
                b.append(timed(lambda: ours.chat(MSGS))[0])
        finally:
            bare.close()
            ours.close()
    fa, fb = summary(a), summary(b)
    return {"bare_sdk": fa, "gateway": fb,
            "overhead_median_ms": round(fb["median_ms"] - fa["median_ms"], 3),
            "ratio": round(fb["median_ms"] / fa["median_ms"], 3), "target_ms": 2.0}


def tool_round_trip(runtime: str, runs: int, tmp: Path) -> dict[str, Any]:
    s = Settings.of(data_dir=tmp / f"data-{runtime}", state_dir=tmp / f"state-{runtime}",
                    cgroup_parent=CGROUP, runtime=runtime, code_pool=True)
    srv = ProviderServer("openai")
    gate = Gate(s)
    gate.start()
    gw = Gateway([OpenAIConfig(name="scripted", base_url=f"{srv.url}/v1",
                               model="scripted-model")], default="scripted")
    asst = Assistant(gate, gw)
    me = Principal("admin", "admin")
    gate.create_principal("admin", "admin")
    try:
        mgr = gate.sandbox_manager()
        spec = mgr.spec_for("default")
        cold = [timed(lambda: mgr.run(["python3", "-c", "print(6*7)"], spec))[0]
                for _ in range(max(3, runs // 4))]
        # the floor: what the executor itself does with a warm pool: acquire a sandbox whose
        # python kernel runs, run the code in it, hand the sandbox to the background delete
        floor, execs, cells = [], [], []
        with mgr.pool("default", kernels=("python",)) as pool:
            pool.wait_ready(timeout_s=120)
            for _ in range(runs):
                pool.wait_ready(timeout_s=120)
                t0 = time.perf_counter()
                sb = pool.acquire()
                try:
                    t1 = time.perf_counter()
                    sb.code.run("python", "print(6*7)")
                    cells.append((time.perf_counter() - t1) * 1000)
                finally:
                    sb.delete_soon()
                floor.append((time.perf_counter() - t0) * 1000)
                # and what the same code costs as a new process (the path before warm kernels)
                with pool.acquire() as sb2:
                    t1 = time.perf_counter()
                    sb2.exec(["python3", "-c", "print(6*7)"])
                    execs.append((time.perf_counter() - t1) * 1000)
            mgr.reaper.drain()
        # where the rest goes: one audit append (fsync'd), and a whole gate action alone
        audit_ms = [timed(lambda: gate.audit.append(AuditEvent.SERVER_STARTED,
                                                    principal="bench", details={}))[0]
                    for _ in range(runs)]
        gate_ms = []
        for _ in range(runs):
            gate.context.pools.get(mgr, "default").wait_ready(timeout_s=120)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            rec = gate.submit(me, ActionRequest(action_type="code_execution", parameters={
                "language": "python", "code": "print(6*7)"}))
            asst.wait_action(rec.id)
            gate_ms.append((time.perf_counter() - t0) * 1000)
        per_action = sum(1 for e in gate.audit.entries(limit=100000) if e.action_id == rec.id)
        trips = []
        for _ in range(runs + 1):
            gate.context.pools.get(mgr, "default").wait_ready(timeout_s=120)  # type: ignore[union-attr]
            srv.script = [Reply(calls=[("run_code", {"language": "python",
                                                     "code": "print(6*7)"})]),
                          Reply(text="42")]
            conv = asst.create(me)
            n0 = len(srv.seen)
            out = asst.send(me, conv.id, "6*7?")
            assert out.status == "finished" and out.text == "42", out
            first, second = srv.seen[n0], srv.seen[n0 + 1]
            trips.append((second.at - first.answered_at) * 1000)
        trips = trips[1:]   # the first pays for imports
    finally:
        asst.close()
        gw.close()
        gate.close()
        srv.close()
    ft, ff = summary(trips), summary(floor)
    return {"round_trip": ft, "floor_warm_acquire_cell": ff,
            "warm_cell_only": summary(cells), "warm_exec_only": summary(execs),
            "cold_sandbox_run": summary(cold),
            "gate_action_alone": summary(gate_ms), "audit_append_fsync": summary(audit_ms),
            "audit_entries_per_action": per_action,
            "overhead_median_ms": round(ft["median_ms"] - ff["median_ms"], 2),
            "ratio": round(ft["median_ms"] / ff["median_ms"], 3),
            "target_ms": 15.0 if runtime == "runc" else 40.0}


class _Threaded:
    """An ASGI app under the API's uvicorn config (``closedpaw serve``'s: its protocol sets
    TCP_NODELAY; with uvicorn's default one each SSE event waited ~40 ms for the client's
    delayed ACK), on a thread of this process, on 127.0.0.1."""

    def __init__(self, app: Any, s: Settings) -> None:
        import uvicorn

        from closedpaw.api.guard import uvicorn_config

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(app, s, log_level="warning"))
        self.t = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                  daemon=True)

    def __enter__(self) -> _Threaded:
        self.t.start()
        while not self.server.started:
            time.sleep(0.05)
            if not self.t.is_alive():
                raise SystemExit("the server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.t.join(30)
        self.sock.close()


def _bare_sse(prov: Any, msgs: list[Message], tools: Any) -> Any:
    """The floor of an HTTP API: a plain Starlette route streaming the model's tokens as SSE
    (the model on a worker thread, each token handed to the loop), nothing else: no
    authentication, no record, no screening, no middleware."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def sse(request: Request) -> StreamingResponse:
        await request.body()
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str | None] = asyncio.Queue()

        def run() -> None:
            try:
                for d in prov.stream(msgs, tools):
                    if d.text:
                        loop.call_soon_threadsafe(q.put_nowait, d.text)
            finally:
                loop.call_soon_threadsafe(q.put_nowait, None)
        task = loop.run_in_executor(None, run)

        async def events() -> Any:
            while (text := await q.get()) is not None:
                yield f"event: token\ndata: {json.dumps({'text': text})}\n\n"
            await task
        return StreamingResponse(events(), media_type="text/event-stream")
    return Starlette(routes=[Route("/sse", sse, methods=["POST"])])


def local_model(tokens: int, runs: int, tmp: Path) -> dict[str, Any]:
    import httpx

    from closedpaw.api import create_app

    cfg = LocalConfig(name="local", max_tokens=tokens)
    prov = cfg.build(None)
    load_ms = prov.load()     # type: ignore[attr-defined]
    question = "Write one sentence about the sea."
    msgs = [Message("system", SYSTEM_PROMPT), Message("user", question)]
    tools = tool_specs()

    def direct() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        ttft = None
        n = 0
        last = t0
        for d in prov.stream(msgs, tools):
            if d.text:
                n += 1
                last = time.perf_counter()
                if ttft is None:
                    ttft = (last - t0) * 1000
        # decode rate: tokens after the first, over the time from the first to the last
        return ttft or 0.0, last - t0 - (ttft or 0.0) / 1000, n - 1

    def streamed(c: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        ttft = None
        n = 0
        last = t0
        with c.stream("POST", path, json=body) as r:
            for line in r.iter_lines():
                if line == "event: token":
                    n += 1
                    last = time.perf_counter()
                    if ttft is None:
                        ttft = (last - t0) * 1000
        return ttft or 0.0, last - t0 - (ttft or 0.0) / 1000, n - 1
    # the servers in this process, on the same model instance: every side asks the same
    # weights, and its cache of the previous prompt (the same prompt) serves all alike
    s = Settings.of(data_dir=tmp / "data-api", state_dir=tmp / "state-api", cgroup_parent=CGROUP)
    gw = Gateway([cfg], default="local")
    gw.add(prov)
    ttft: dict[str, list[float]] = {"direct": [], "bare": [], "api": []}
    tps: dict[str, list[float]] = {"direct": [], "bare": [], "api": []}
    try:
        with _Threaded(create_app(s, providers=gw), s) as api_srv, \
                _Threaded(_bare_sse(prov, msgs, tools), s) as bare_srv, \
                httpx.Client(base_url=api_srv.url, trust_env=False, timeout=300, headers={
                    "Authorization": f"Bearer {s.token_file.read_text().strip()}"}) as c, \
                httpx.Client(base_url=bare_srv.url, trust_env=False, timeout=300) as b:
            def api() -> tuple[float, float, int]:
                conv = c.post("/api/conversations", json={}).json()["conversation_id"]
                return streamed(c, f"/api/conversations/{conv}/messages",
                                {"content": question})
            sides = {"direct": direct, "bare": lambda: streamed(b, "/sse", {}), "api": api}
            for fn in sides.values():   # one warm-up each
                fn()
            # rounds rotating which goes first, so a drift of the host hits every side of a
            # round; "paired" is the median of the rounds' differences
            names = list(sides)
            for i in range(runs):
                for name in names[i % 3:] + names[:i % 3]:
                    first, total, n = sides[name]()
                    ttft[name].append(first)
                    tps[name].append(n / total)
    finally:
        gw.close()

    def paired(a: str, b: str) -> float:
        return round(statistics.median(x - y for x, y in zip(ttft[a], ttft[b], strict=True)), 2)
    dt, bt, at = summary(ttft["direct"]), summary(ttft["bare"]), summary(ttft["api"])
    return {"load_ms": round(load_ms, 1), "direct_ttft": dt, "bare_http_ttft": bt,
            "api_ttft": at,
            "direct_tokens_per_s": round(statistics.median(tps["direct"]), 2),
            "bare_http_tokens_per_s": round(statistics.median(tps["bare"]), 2),
            "api_tokens_per_s": round(statistics.median(tps["api"]), 2),
            "ttft_overhead_median_ms": round(at["median_ms"] - dt["median_ms"], 2),
            "ttft_overhead_paired_ms": paired("api", "direct"),
            "bare_http_over_direct_paired_ms": paired("bare", "direct"),
            "api_over_bare_http_paired_ms": paired("api", "bare"),
            "target_ms": 5.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--model-runs", type=int, default=15)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--only-model", action="store_true")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-assistant-"))
    tmp.chmod(0o711)   # searchable: sandboxes get their own user namespace, as in use
    out: dict[str, Any] = {"machine": machine_info()}
    try:
        g = out["gateway_overhead"] = gateway_overhead(args.runs * 5)
        print(f"gateway chat        median {g['gateway']['median_ms']:7.2f} ms   bare SDK "
              f"{g['bare_sdk']['median_ms']:7.2f} ms   +{g['overhead_median_ms']:.2f} ms "
              f"(x{g['ratio']}, target <= +2 ms)")
        for rt in () if args.only_model else ("runc", "runsc"):
            r = out[f"tool_round_trip_{rt}"] = tool_round_trip(rt, args.runs, tmp)
            print(f"tool round trip {rt:<5} median {r['round_trip']['median_ms']:7.2f} ms   "
                  f"floor (warm acquire + cell) "
                  f"{r['floor_warm_acquire_cell']['median_ms']:7.2f} ms   "
                  f"+{r['overhead_median_ms']:.2f} ms (x{r['ratio']}; target "
                  f"{r['target_ms']} ms)")
            print(f"  warm cell only {r['warm_cell_only']['median_ms']:7.2f} ms   warm exec "
                  f"(python3 -c) {r['warm_exec_only']['median_ms']:7.2f} ms   cold run "
                  f"{r['cold_sandbox_run']['median_ms']:7.2f} ms   gate action alone "
                  f"{r['gate_action_alone']['median_ms']:7.2f} ms   audit append (fsync) "
                  f"{r['audit_append_fsync']['median_ms']:6.2f} ms x "
                  f"{r['audit_entries_per_action']} per action")
        if not args.skip_model:
            m = out["local_model"] = local_model(args.tokens, args.model_runs, tmp)
            print(f"local model load    {m['load_ms']:.0f} ms")
            print(f"local model TTFT    api {m['api_ttft']['median_ms']:7.1f} ms   direct "
                  f"{m['direct_ttft']['median_ms']:7.1f} ms   "
                  f"+{m['ttft_overhead_median_ms']:.1f} ms, paired "
                  f"+{m['ttft_overhead_paired_ms']:.1f} ms (target <= +5 ms)")
            print(f"  floor: bare HTTP SSE {m['bare_http_ttft']['median_ms']:7.1f} ms: "
                  f"+{m['bare_http_over_direct_paired_ms']:.1f} ms over direct, the API "
                  f"+{m['api_over_bare_http_paired_ms']:.1f} ms over it (paired)")
            print(f"local tokens/s      api {m['api_tokens_per_s']:.1f}   bare HTTP "
                  f"{m['bare_http_tokens_per_s']:.1f}   direct {m['direct_tokens_per_s']:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        from _common import remove_empty_cgroup_parents

        remove_empty_cgroup_parents(CGROUP)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
