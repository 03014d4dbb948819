"""Prompt-injection screening: recall and false-positive rate on two labelled sets, and speed.

    .venv/bin/python benchmarks/screening.py [--runs N] [--json PATH]

Sets: the public corpus of the PyPI package ``bastioncorpus`` (held out: the rules were
written from the project's own set first) and the project's own set in
``tests/data/screening_cases.jsonl``. Speed: throughput over every text of both sets (MB/s)
and the latency of one 2 KB message (p50/p99 over N runs of a mix of benign and malicious
2 KB messages), as wall time and as the thread's CPU time (on a shared, loaded machine the
wall time mostly measures waiting for a core). Targets are printed beside each result with
the ratio. Writes JSON to
benchmarks/results/screening.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_args, machine_info, write_report

from closedpaw.screening import screen
from closedpaw.screening.evaluate import Case, half, measure

DEFAULT_JSON = REPO / "benchmarks" / "results" / "screening.json"
OWN = REPO / "tests" / "data" / "screening_cases.jsonl"
TARGET_RECALL = 0.90
TARGET_FPR = 0.05
TARGET_P99_MS = 1.0


def own_cases() -> list[Case]:
    rows = [json.loads(line) for line in OWN.read_text().splitlines() if line.strip()]
    return [Case(r["id"], r["text"], r["label"] == "malicious", r["category"], r["lang"])
            for r in rows]


def corpus_cases() -> list[Case]:
    from bastioncorpus import load_corpus

    return [Case(r.id, r.stripped() if r.has_canary else r.text, r.is_malicious, r.category,
                 r.lang) for r in load_corpus()]


def two_kb_messages(cases: list[Case]) -> list[str]:
    """2048-character messages: ordinary prose with one case's text inserted at a random
    word boundary."""
    import random

    rnd = random.Random(7)
    filler = ("The quarterly report is attached; the numbers for March look better than "
              "expected, and the team will review the forecast on Thursday. ")
    out = []
    for c in cases:
        body = (filler * 30)[: 2048 - len(c.text) - 1]
        cut = body.rfind(" ", 0, rnd.randrange(1, len(body))) + 1   # at a word boundary
        out.append((body[:cut] + c.text + " " + body[cut:])[:2048])
    return out


def _cpu_once(msg: str) -> float:
    c = time.thread_time_ns()
    screen(msg)
    return (time.thread_time_ns() - c) / 1e6


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__ or "", DEFAULT_JSON, runs=2000, min_runs=200, argv=argv)
    sets = {"bastioncorpus": corpus_cases(), "own": own_cases()}
    res: dict[str, Any] = {"machine": machine_info(binaries=()), "sets": {}}
    lines = ["set                              rows  recall (>= 90%)   FPR (<= 5%)     categories"]
    sets["bastioncorpus (held-out half)"] = half(sets["bastioncorpus"], "test")
    sets["bastioncorpus (dev half)"] = half(sets["bastioncorpus"], "dev")
    for name, cases in sets.items():
        m = measure(cases)
        res["sets"][name] = m.to_dict()
        cats = ", ".join(f"{k} {c}/{t}" for k, (c, t) in sorted(m.per_category.items()))
        ratio = m.recall / TARGET_RECALL
        lines.append(f"{name:<32} {len(cases):>4}  {m.recall:6.1%} ({ratio:4.2f}x)"
                     f"  {m.fpr:6.1%} ({'ok' if m.fpr <= TARGET_FPR else 'OVER'})   {cats}")
    for name in ("bastioncorpus", "own"):       # the same cases inside 2 KB of prose
        cases = sets[name]
        inside = [Case(c.id, m, c.malicious, c.category, c.lang)
                  for c, m in zip(cases, two_kb_messages(cases), strict=True)]
        m = measure(inside)
        res["sets"][f"{name} inside 2 KB"] = m.to_dict()
        lines.append(f"{name + ' inside 2 KB prose':<32} {len(cases):>4}  {m.recall:6.1%} "
                     f"({m.recall / TARGET_RECALL:4.2f}x)  {m.fpr:6.1%} "
                     f"({'ok' if m.fpr <= TARGET_FPR else 'OVER'})")
    both = [sets["bastioncorpus"], sets["own"]]
    texts = [c.text for cs in both for c in cs]
    total = sum(len(t.encode()) for t in texts)
    rounds = 20
    t0 = time.perf_counter()
    for _ in range(rounds):
        for t in texts:
            screen(t)
    secs = time.perf_counter() - t0
    mbps = total * rounds / secs / 1e6
    msgs = two_kb_messages([c for cs in both for c in cs])
    for m2 in msgs[:50]:
        screen(m2)
    lat, cpu = [], []
    for i in range(args.runs):
        msg = msgs[i % len(msgs)]
        c1 = time.thread_time_ns()
        t1 = time.perf_counter_ns()
        screen(msg)
        lat.append((time.perf_counter_ns() - t1) / 1e6)
        cpu.append((time.thread_time_ns() - c1) / 1e6)
    lat.sort()
    cpu.sort()
    # the least-disturbed figure: each message's fastest of 5 CPU-time runs
    best = sorted(min(_cpu_once(m) for _ in range(5)) for m in msgs)
    best99 = best[int(0.99 * (len(best) - 1))]
    p99 = lat[int(0.99 * (len(lat) - 1))]
    cpu99 = cpu[int(0.99 * (len(cpu) - 1))]
    msg_bytes = sum(len(m.encode()) for m in msgs)
    t0 = time.perf_counter()
    for m in msgs:
        screen(m)
    mbps_2kb = msg_bytes / (time.perf_counter() - t0) / 1e6
    res["speed"] = {"throughput_mb_s": round(mbps, 2), "bytes": total * rounds,
                    "throughput_2kb_messages_mb_s": round(mbps_2kb, 2),
                    "latency_2kb_ms": {"n": len(lat), "p50": round(statistics.median(lat), 4),
                                       "p99": round(p99, 4), "max": round(lat[-1], 4)},
                    "cpu_2kb_ms": {"p50": round(statistics.median(cpu), 4),
                                   "p99": round(cpu99, 4)},
                    "best_of_5_cpu_2kb_ms": {"p50": round(statistics.median(best), 4),
                                             "p99": round(best99, 4)},
                    "loadavg_end": os.getloadavg(),
                    "target_p99_ms": TARGET_P99_MS}
    lines.append(f"\nthroughput      {mbps:.2f} MB/s over {len(texts)} short texts x {rounds}; "
                 f"{mbps_2kb:.2f} MB/s over {len(msgs)} 2 KB messages")
    lines.append(f"2 KB message    wall p50 {statistics.median(lat):.3f} ms, p99 {p99:.3f} ms "
                 f"(target <= {TARGET_P99_MS} ms: {p99 / TARGET_P99_MS:.2f}x of it)")
    lines.append(f"                CPU  p50 {statistics.median(cpu):.3f} ms, p99 {cpu99:.3f} ms "
                 f"({cpu99 / TARGET_P99_MS:.2f}x of the target; load average "
                 f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    lines.append(f"                best of 5 CPU per message: p50 {statistics.median(best):.3f} ms,"
                 " "
                 f"p99 {best99:.3f} ms ({best99 / TARGET_P99_MS:.2f}x of the target)")
    return write_report(res, args.json, "\n".join(lines), {})


if __name__ == "__main__":
    raise SystemExit(main())
