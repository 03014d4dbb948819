"""MCP round trips beside their floors, on runc with warm pools.

    sudo .venv/bin/python benchmarks/mcp_roundtrip.py [--runs N] [--json PATH]

Each case is one action, timed (median over N calls) at every layer it passes through:

- ``session_exec``: ``exec(["true"])`` in a long-lived session (a ``sandbox_session``
  action on a sandbox from a warm pool).
- ``run_code``: ``print(1)`` (a ``code_execution`` action; ``code_pool`` on, so a warm
  sandbox of the policy runs it).

Layers (the floors first):

- ``sandbox``: ``Sandbox.exec`` on a pooled sandbox (no gate): what the sandbox costs.
- ``library``: the same gate action in-process (``McpBridge`` method: submit, the rule's
  approval, execution, the audit entries, waiting for the result): the library call the
  MCP tool wraps.
- ``api``: the same action through the HTTP API of a ``closedpaw serve`` process
  (``POST /api/actions``, the completion heard on ``GET /api/events``, ``GET
  /api/actions/{id}`` for the result).
- ``mcp_http``, ``mcp_stdio``: the MCP tool through the SDK's client, over ``/mcp`` of that
  server and over ``closedpaw mcp`` as a subprocess.
- ``sdk_noop_http``, ``sdk_noop_stdio``: the bare SDK round trip to a no-op tool (an
  ``MCPServer`` with one tool returning ``{}``, logging at WARNING like ours, served the
  same ways: in its own process under the API's uvicorn config, and as a python
  subprocess): what the MCP SDK costs by itself.

Every server runs in its own process, as deployed: in the benchmark's process (as before
``closedpaw serve`` was one here) its threads shared one interpreter lock with the client,
the library's gate and the event listener.

Every timed call starts from the same state (:class:`_Settle`): the warm pools of both
gates full (the benchmark's own, read from the pools; the stdio server's, which lives in
another process, seen from the host: the sandboxes under the benchmark's cgroup parent back
to their steady count and using no CPU, i.e. no sandbox starting, warming its kernel or
being deleted). Without it, a layer called right after another's ``run_code`` found the
size-1 pool empty and started a cold sandbox itself (the REST API, called just after the
library, did so in 11 of 13 rounds: 150-390 ms), and the others ran beside a refill on the
2 cores. The order of the layers rotates every round. Cold acquires of the in-process pool
are counted per layer (``cold_acquires``; 0 expected).

Prints each median beside its floors (the library call, the API, the SDK's no-op) with the
ratio and the overhead in ms (target: MCP <= 5 ms over the library), and, for the floors
timed in the same rounds, the median of the per-round differences (``paired``: host drift
cancels out), and writes JSON to benchmarks/results/mcp.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# this file is named like the SDK's package: import the SDK before our directory is on the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
import anyio  # noqa: E402
import httpx  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent))   # the repository: tests.mcp_clients
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
from closedpaw.sandbox.host import inventory  # noqa: E402
from closedpaw.security import Principal  # noqa: E402
from closedpaw.settings import Settings  # noqa: E402
from tests.mcp_clients import http_session, stdio_session  # noqa: E402

DEFAULT_JSON = REPO / "benchmarks" / "results" / "mcp.json"
CGROUP = "closedpaw-bench-mcp"
ME = Principal("bench", "user")
CODE = "print(1)"
POLICY = "default"

#: the no-op MCP server (stdio): the SDK alone
NOOP_STDIO = """
from mcp.server.mcpserver import MCPServer
srv = MCPServer(name="noop", log_level="WARNING")
@srv.tool()
def noop() -> dict:
    return {}
srv.run("stdio")
"""

#: the no-op MCP server (HTTP, port in argv[1]): the SDK alone, under the API's uvicorn config
NOOP_HTTP = """
import sys
import uvicorn
from mcp.server.mcpserver import MCPServer
from closedpaw.api.guard import uvicorn_config
from closedpaw.settings import Settings
srv = MCPServer(name="noop", log_level="WARNING")
@srv.tool()
def noop() -> dict:
    return {}
app = srv.streamable_http_app(json_response=True)
uvicorn.Server(uvicorn_config(app, Settings.from_env(), host="127.0.0.1",
                              port=int(sys.argv[1]), log_level="warning")).run()
"""

Samples = dict[str, list[float]]


class _Mcp:
    """One MCP client session's two timed calls (a session's exec, run_code)."""

    def __init__(self, ses: ClientSession) -> None:
        self.ses = ses
        self.sid = ""

    async def open(self) -> None:
        made = await self.ses.call_tool("create_session", {"policy": POLICY})
        assert not made.is_error, made
        self.sid = made.structured_content["session_id"]

    async def run_code(self) -> None:
        r = await self.ses.call_tool("run_code", {"language": "python", "code": CODE})
        assert not r.is_error and r.structured_content["stdout"] == "1\n", r

    async def session_exec(self) -> None:
        r = await self.ses.call_tool("exec", {"session_id": self.sid, "argv": ["true"]})
        assert not r.is_error and r.structured_content["exit_code"] == 0, r

    async def noop(self) -> None:
        r = await self.ses.call_tool("noop", {})
        assert not r.is_error, r

    async def close(self) -> None:
        await self.ses.call_tool("close_session", {"session_id": self.sid})


def _env(s: Settings) -> dict[str, str]:
    env = {"CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_STATE_DIR": str(s.state_dir),
           "CLOSEDPAW_CGROUP_PARENT": CGROUP, "CLOSEDPAW_RUNTIME": "runc",
           "CLOSEDPAW_IMAGE_DIR": str(s.images), "CLOSEDPAW_POOL_SIZE": "1",
           "CLOSEDPAW_CODE_POOL": "1", "CLOSEDPAW_RATE_LIMIT_PER_MINUTE": "100000",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


class _Server:
    """A server in its own process on 127.0.0.1, as it is deployed (``closedpaw serve``; a
    client is another process): ``argv`` gets the port appended. In the benchmark's own
    process its threads would share one interpreter lock with the client, the library's
    gate and the event listener, and every hand-over waited on them."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [*argv, str(self.port)]
        self.env = env
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        end = time.monotonic() + 60
        while time.monotonic() < end and self.proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        self.__exit__()
        self.log.seek(0)
        raise SystemExit(f"{self.argv[:3]} did not start:\n"
                         f"{self.log.read().decode(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class _ApiClient:
    """The HTTP API as a client uses it: submit, hear the end on the event stream, fetch."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120, trust_env=False)
        self._final: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._sock: socket.socket | None = None
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._listen, daemon=True)
        self._t.start()
        self._ready.wait(30)
        self.sid = ""

    def _event(self, aid: str) -> threading.Event:
        with self._lock:
            return self._final.setdefault(aid, threading.Event())

    def _listen(self) -> None:
        try:
            self._listen_until_closed()
        except httpx.HTTPError:   # the server stopped under it: the run is over
            return
        except Exception:
            if not self._stop:   # closed under it by close(): the run is over
                raise

    def _listen_until_closed(self) -> None:
        with httpx.Client(base_url=str(self.http.base_url), headers=self.http.headers,
                          timeout=None, trust_env=False) as c, \
                c.stream("GET", "/api/events") as r:
            self._sock = r.extensions["network_stream"].get_extra_info("socket")
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    self._ready.set()
                if self._stop:
                    return
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    if ev.get("status") in ("completed", "failed", "rejected", "expired",
                                            "interrupted"):
                        self._event(ev["action_id"]).set()

    def act(self, action_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/api/actions", json={"action_type": action_type,
                                                 "parameters": parameters})
        r.raise_for_status()
        aid = r.json()["action_id"]
        if not self._event(aid).wait(120):
            raise SystemExit(f"action {aid} never ended")
        with self._lock:
            self._final.pop(aid, None)
        out: dict[str, Any] = self.http.get(f"/api/actions/{aid}").json()
        return out

    def open(self) -> None:
        self.sid = self.act("sandbox_session", {"op": "create",
                                                "policy": POLICY})["result"]["session_id"]

    def run_code(self) -> None:
        r = self.act("code_execution", {"language": "python", "code": CODE})
        assert r["result"]["stdout"] == "1\n", r

    def session_exec(self) -> None:
        r = self.act("sandbox_session", {"op": "exec", "session_id": self.sid,
                                         "argv": ["true"]})
        assert r["result"]["exit_code"] == 0, r

    def close(self) -> None:
        self.act("sandbox_session", {"op": "close", "session_id": self.sid})
        self._stop = True
        self.http.close()
        # end the event stream now (its read is blocked until the next event): the server's
        # graceful shutdown would otherwise wait out its timeout (3 s) for it and cancel it,
        # logging an error
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._t.join(10)


class _Library:
    """The gate action in-process: the calls the MCP tools wrap."""

    def __init__(self, gate: Gate) -> None:
        self.bridge = McpBridge(gate)
        self.sid = self.bridge.create_session(ME, POLICY)["session_id"]

    def run_code(self) -> None:
        assert self.bridge.run_code(ME, "python", CODE)["stdout"] == "1\n"

    def session_exec(self) -> None:
        assert self.bridge.exec(ME, self.sid, ["true"])["exit_code"] == 0

    def close(self) -> None:
        self.bridge.close_session(ME, self.sid)


class _Raw:
    """A pooled sandbox, no gate."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb

    def run_code(self) -> None:
        assert self.sb.exec(["python3", "-c", CODE]).stdout == b"1\n"

    def session_exec(self) -> None:
        assert self.sb.exec(["true"]).exit_code == 0


class _Settle:
    """Wait, before each timed call, until nothing of an earlier call is still going on:
    the in-process code pool full, and every sandbox of both gates (the stdio server's pool
    cannot be asked from here: it is seen on the host) started and idle, as many as at the
    steady state. A refill that runs beside a timed call, or a pool found empty, is the
    pool's cost, not the layer's."""

    #: the sandboxes' CPU (all of them) must stay under this for QUIET_S to call them idle
    QUIET_CPU_MS = 2.0
    QUIET_S = 0.1
    TIMEOUT_S = 20.0

    def __init__(self, gate: Gate, settings: Settings) -> None:
        self.pool = gate.context.pools.get(gate.sandbox_manager(), "default")
        self.steady = -1   # not known before calibrate(): idle is enough
        self.late = 0      # waits that timed out (the call was timed anyway)
        self._dirs = settings.state_dir / "sandboxes"
        self._cpu: Path | None = None
        for base in inventory.cgroup_bases(CGROUP):
            for f in ("cpuacct.usage", "cpu.stat"):   # cgroup v1, v2
                if self._cpu is None and (base / f).exists():
                    self._cpu = base / f

    def _cpu_ms(self) -> float:
        f = self._cpu
        try:
            text = f.read_text() if f is not None else ""
        except OSError:
            return 0.0
        if f is not None and f.name == "cpuacct.usage":
            return int(text) / 1e6
        for line in text.splitlines():   # cgroup v2
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e3
        return 0.0

    def _started(self) -> int:
        """How many sandboxes exist, all started (a state dir and a cgroup each); -1 while
        one is being made or deleted (a state dir without its cgroup, or the reverse)."""
        try:
            dirs = {e.name for e in os.scandir(self._dirs)}
        except OSError:
            dirs = set()
        groups = [set(k) for k in inventory.cgroup_children(CGROUP).values()]
        return len(dirs) if all(g == dirs for g in groups) else -1

    def _idle(self, end: float) -> int:
        """Wait until the sandboxes use no CPU for QUIET_S, none made or deleted meanwhile;
        how many there are (-1 if still busy at ``end``)."""
        while True:
            n, c0 = self._started(), self._cpu_ms()
            time.sleep(self.QUIET_S)
            if n >= 0 and self._started() == n and self._cpu_ms() - c0 < self.QUIET_CPU_MS:
                return n
            if time.monotonic() >= end:
                return -1

    def calibrate(self) -> None:
        """The steady count: after the warm-up, with everything started and idle."""
        end = time.monotonic() + self.TIMEOUT_S
        self.pool.wait_ready(timeout_s=self.TIMEOUT_S)
        self.steady = self._idle(end)

    def __call__(self) -> None:
        end = time.monotonic() + self.TIMEOUT_S
        while True:
            ok = self.pool.wait_ready(timeout_s=max(0.0, end - time.monotonic()))
            n = self._idle(end) if ok else -1
            if n >= 0 and self.steady in (-1, n) and self.pool.ready == self.pool.size:
                return
            if time.monotonic() >= end:
                self.late += 1
                return

    def cold(self) -> int:
        return self.pool.stats().acquired_cold


async def _rounds(runs: int, sync: dict[str, Any], asy: dict[str, _Mcp],
                  noops: dict[str, _Mcp], settle: _Settle) -> tuple[dict[str, Samples],
                                                                    dict[str, int]]:
    """Round-robin: each round calls every layer once per case, each after :class:`_Settle`
    (so each starts from the same state), the layers' order rotating every round (host drift
    hits all alike); then each no-op server once. 3 warm-up rounds first, then the steady
    state is calibrated. Also returns the in-process pool's cold acquires per layer."""
    out: dict[str, Samples] = {k: {"run_code": [], "session_exec": []}
                               for k in (*sync, *asy)}
    out.update({k: {"noop": []} for k in noops})
    cold = {k: 0 for k in (*sync, *asy)}
    layers: list[tuple[str, Any, bool]] = [*((k, v, False) for k, v in sync.items()),
                                           *((k, v, True) for k, v in asy.items())]
    for i in range(runs + 3):
        if i == 3:
            settle.calibrate()
        k = i % len(layers)
        order = [*layers[k:], *layers[:k]]
        for case in ("session_exec", "run_code"):
            for name, obj, is_async in order:
                settle()
                c0 = settle.cold()
                t0 = time.perf_counter_ns()
                if is_async:
                    await getattr(obj, case)()
                else:
                    getattr(obj, case)()
                dt = (time.perf_counter_ns() - t0) / 1e6
                if i >= 3:
                    out[name][case].append(dt)
                    cold[name] += settle.cold() - c0
        for name, m in noops.items():
            settle()
            t0 = time.perf_counter_ns()
            await m.noop()
            if i >= 3:
                out[name]["noop"].append((time.perf_counter_ns() - t0) / 1e6)
        print(f"\rround {i + 1}/{runs + 3}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out, cold


def _measure(s: Settings, gate: Gate, runs: int) -> tuple[dict[str, Samples], dict[str, Any]]:
    closedpaw = str(Path(sys.executable).with_name("closedpaw"))
    stdio_noop = StdioServerParameters(command=sys.executable, args=["-c", NOOP_STDIO],
                                       env={"PATH": "/usr/bin:/bin"})
    stdio_cp = StdioServerParameters(command=closedpaw, args=["mcp", "--principal", "bench"],
                                     env=_env(s))
    pool = gate.sandbox_manager().pool(POLICY, size=1)
    with _Server([closedpaw, "serve", "--port"], _env(s)) as api_srv, \
            _Server([sys.executable, "-c", NOOP_HTTP], _env(s)) as noop_srv, \
            pool.acquire(timeout_s=60) as sb:
        token = gate.create_principal("bench-http", "user")
        lib, api = _Library(gate), _ApiClient(api_srv.url, token)
        try:
            api.open()

            settle = _Settle(gate, s)

            async def main() -> tuple[dict[str, Samples], dict[str, int]]:
                async with http_session(api_srv.url, token) as h, stdio_session(stdio_cp) as st, \
                        http_session(noop_srv.url, None) as nh, stdio_session(stdio_noop) as ns:
                    mh, ms = _Mcp(h), _Mcp(st)
                    await mh.open()
                    await ms.open()
                    try:
                        return await _rounds(
                            runs, {"sandbox": _Raw(sb), "library": lib, "api": api},
                            {"mcp_http": mh, "mcp_stdio": ms},
                            {"sdk_noop_http": _Mcp(nh), "sdk_noop_stdio": _Mcp(ns)}, settle)
                    finally:
                        await mh.close()
                        await ms.close()
            samples, cold = anyio.run(main)
            return samples, {"cold_acquires": cold, "settle_timeouts": settle.late,
                             "steady_sandboxes": settle.steady}
        finally:
            lib.close()
            api.close()
            pool.close()


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__ or "", DEFAULT_JSON, runs=30, min_runs=5, argv=argv)
    tmp = Path(tempfile.mkdtemp(prefix="closedpaw-bench-mcp-"))
    tmp.chmod(0o711)   # searchable: sandboxes get their own user namespace, as in use
    state = Path(f"/run/closedpaw-bench-mcp-{os.getpid()}")
    s = Settings.of(data_dir=tmp / "data", state_dir=state, cgroup_parent=CGROUP,
                    runtime="runc", pool_size=1, code_pool=True,
                    rate_limit_per_minute=100_000, image_dir=Settings.from_env().images)
    before = footprint(s)
    gate = Gate(s)
    try:
        gate.start()
        samples, state_info = _measure(s, gate, args.runs)
    finally:
        gate.close()
        shutil.rmtree(tmp, ignore_errors=True)
    noop = {"http": summary(samples["sdk_noop_http"]["noop"]),
            "stdio": summary(samples["sdk_noop_stdio"]["noop"])}
    res: dict[str, Any] = {"machine": machine_info(("runc",)), "runs": args.runs,
                           "cases": {}, "sdk_noop": noop, **state_info}
    lines = [f"{'case':<13} {'layer':<10} {'median ms':>10} {'floor':<8} {'floor ms':>9} "
             f"{'ratio':>6} {'over ms':>8} {'paired':>7}"]
    for case in ("session_exec", "run_code"):
        c: dict[str, Any] = {k: summary(samples[k][case]) for k in
                             ("sandbox", "library", "api", "mcp_http", "mcp_stdio")}
        floors: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "sandbox": [], "library": [("sandbox", c["sandbox"])],
            "api": [("library", c["library"])],
            "mcp_http": [("library", c["library"]), ("api", c["api"]),
                         ("sdk_noop", noop["http"])],
            "mcp_stdio": [("library", c["library"]), ("sdk_noop", noop["stdio"])]}
        for layer, fl in floors.items():
            med = c[layer]["median_ms"]
            c[layer]["over"] = {}
            if not fl:
                lines.append(f"{case:<13} {layer:<10} {med:>10.2f}")
            for name, f in fl:
                fm = f["median_ms"]
                over: dict[str, Any] = {"floor_ms": fm, "ratio": round(med / fm, 2),
                                        "over_ms": round(med - fm, 2)}
                paired = ""
                if name in samples and case in samples[name]:
                    # the same round's floor: drift of the host cancels out
                    d = statistics.median(a - b for a, b in zip(samples[layer][case],
                                                                samples[name][case],
                                                                strict=True))
                    over["paired_over_ms"] = round(d, 2)
                    paired = f"{d:>7.2f}"
                c[layer]["over"][name] = over
                lines.append(f"{case:<13} {layer:<10} {med:>10.2f} {name:<8} {fm:>9.2f} "
                             f"{med / fm:>6.2f} {med - fm:>8.2f} {paired}")
        res["cases"][case] = c
    lines.append(f"sdk no-op round trip: http {noop['http']['median_ms']:.2f} ms, "
                 f"stdio {noop['stdio']['median_ms']:.2f} ms")
    lines.append(f"cold acquires of the in-process pool per layer: {state_info['cold_acquires']}"
                 f"; settle timeouts: {state_info['settle_timeouts']}; steady sandboxes: "
                 f"{state_info['steady_sandboxes']}")
    leaks = new_items(before, footprint(s))
    remove_bench_state(state, CGROUP, leaks)
    return write_report(res, args.json, "\n".join(lines), leaks)


if __name__ == "__main__":
    raise SystemExit(main())
