"""MCP round trips next to the library calls they wrap, on runc.

    sudo .venv/bin/python benchmarks/mcp.py [--runs N] [--json PATH]

Cases (each a median over N calls, round-robin so host drift hits all alike):

- ``run_code``: the library call is ``McpBridge.run_code`` in-process (gate submit of a medium
  ``code_execution`` -> executor -> a fresh runc sandbox -> completed), against the same tool
  called through the SDK's client over stdio (``closedpaw mcp`` as a subprocess) and over
  streamable HTTP (``/mcp`` of the API app under uvicorn on 127.0.0.1, with the token).
- ``session_exec``: ``exec(["true"])`` in a long-lived sandbox taken from a warm pool; the
  library call is ``Sandbox.exec`` on a pooled sandbox, against the ``exec`` tool of a session
  over stdio and over HTTP.

Prints each median, the floor (the library call), the ratio and the overhead in ms (target:
<= 5 ms over the library), and writes JSON to benchmarks/results/mcp.json.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# this file is named like the SDK's package: import the SDK before our directory is on the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
import anyio  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

sys.path.insert(0, str(_HERE))
from _common import (  # noqa: E402
    REPO,
    bench_args,
    footprint,
    machine_info,
    new_items,
    remove_bench_state,
    summary,
    write_report,
)

from closedpaw.gate import Gate  # noqa: E402
from closedpaw.mcp import McpBridge  # noqa: E402
from closedpaw.security import Principal  # noqa: E402
from closedpaw.settings import Settings  # noqa: E402

DEFAULT_JSON = REPO / "benchmarks" / "results" / "mcp.json"
CGROUP = "closedpaw-bench-mcp"
ME = Principal("bench", "admin")
CODE = "print(1)"


async def _time(n: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


async def _over_session(session: ClientSession, runs: int) -> dict[str, list[float]]:
    async def run_code() -> None:
        r = await session.call_tool("run_code", {"language": "python", "code": CODE})
        assert not r.is_error and r.structured_content["stdout"] == "1\n", r
    sid = (await session.call_tool("create_session", {"policy": "default"})
           ).structured_content["session_id"]

    async def exec_() -> None:
        r = await session.call_tool("exec", {"session_id": sid, "argv": ["true"]})
        assert not r.is_error and r.structured_content["exit_code"] == 0, r
    await run_code()
    await exec_()
    out = {"run_code": await _time(runs, run_code), "session_exec": await _time(runs, exec_)}
    await session.call_tool("close_session", {"session_id": sid})
    return out


def _stdio(s: Settings, runs: int) -> dict[str, list[float]]:
    env = {"CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_STATE_DIR": str(s.state_dir),
           "CLOSEDPAW_CGROUP_PARENT": CGROUP, "CLOSEDPAW_RUNTIME": "runc",
           "CLOSEDPAW_IMAGE_DIR": str(s.images), "CLOSEDPAW_POOL_SIZE": "1",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    params = StdioServerParameters(command=str(Path(sys.executable).with_name("closedpaw")),
                                   args=["mcp", "--principal", "bench"], env=env)

    async def main() -> dict[str, list[float]]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as ses:
            await ses.initialize()
            return await _over_session(ses, runs)
    return anyio.run(main)


def _http(s: Settings, gate: Gate, runs: int) -> dict[str, list[float]]:
    import httpx2
    import uvicorn
    from mcp.client.streamable_http import streamable_http_client

    from closedpaw.api import create_app

    app = create_app(s, gate=gate)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           ws="none", http="h11"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        while not server.started:
            time.sleep(0.05)
            if not t.is_alive():
                raise SystemExit("the API server did not start")
        token = gate.create_principal("bench-http", "user")

        async def main() -> dict[str, list[float]]:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                          timeout=120) as http, \
                    streamable_http_client(f"http://127.0.0.1:{port}/mcp",
                                           http_client=http) as (read, write), \
                    ClientSession(read, write) as ses:
                await ses.initialize()
                return await _over_session(ses, runs)
        return anyio.run(main)
    finally:
        server.should_exit = True
        t.join(timeout=30)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__ or "", DEFAULT_JSON, runs=20, min_runs=3, argv=argv)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-mcp-"))
    state = Path(f"/run/closedpaw-bench-mcp-{os.getpid()}")
    s = Settings.of(data_dir=tmp / "data", state_dir=state, cgroup_parent=CGROUP,
                    runtime="runc", pool_size=1,
                    image_dir=Settings.from_env().images)
    before = footprint(s)
    samples: dict[str, dict[str, list[float]]] = {}
    gate = Gate(s)
    try:
        gate.start()
        bridge = McpBridge(gate)
        try:
            bridge.run_code(ME, "python", CODE)
            lib_code = []
            for _ in range(args.runs):
                t0 = time.perf_counter_ns()
                r = bridge.run_code(ME, "python", CODE)
                lib_code.append((time.perf_counter_ns() - t0) / 1e6)
                assert r["stdout"] == "1\n", r
            pool = gate.sandbox_manager().pool("default", size=1)
            try:
                with pool.acquire(timeout_s=60) as sb:
                    sb.exec(["true"])
                    lib_exec = []
                    for _ in range(args.runs):
                        t0 = time.perf_counter_ns()
                        assert sb.exec(["true"]).exit_code == 0
                        lib_exec.append((time.perf_counter_ns() - t0) / 1e6)
            finally:
                pool.close()
        finally:
            bridge.close()
        samples["library"] = {"run_code": lib_code, "session_exec": lib_exec}
        samples["stdio"] = _stdio(s, args.runs)
        samples["http"] = _http(s, gate, args.runs)
    finally:
        gate.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res: dict[str, Any] = {"machine": machine_info(("runc",)), "runs": args.runs,
                           "cases": {}}
    lines = [f"{'case':<14} {'transport':<9} {'median ms':>10} {'floor ms':>9} "
             f"{'ratio':>6} {'over ms':>8}"]
    for case in ("run_code", "session_exec"):
        floor = summary(samples["library"][case])
        res["cases"][case] = {"library": floor}
        for tr in ("library", "stdio", "http"):
            sm = summary(samples[tr][case])
            res["cases"][case][tr] = sm
            over = sm["median_ms"] - floor["median_ms"]
            lines.append(f"{case:<14} {tr:<9} {sm['median_ms']:>10.2f} "
                         f"{floor['median_ms']:>9.2f} "
                         f"{sm['median_ms'] / floor['median_ms']:>6.2f} {over:>8.2f}")
    leaks = new_items(before, footprint(s))
    remove_bench_state(state, CGROUP, leaks)
    return write_report(res, args.json, "\n".join(lines), leaks)


if __name__ == "__main__":
    raise SystemExit(main())
