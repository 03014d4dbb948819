"""A persistent Python interpreter for stateful code cells, started by the in-sandbox agent.

Each line on the control fd is a JSON cell ``{"code": ..., "value_cap": N}``. The cell runs in
one namespace shared by every cell (like a notebook kernel); its prints go to this process's
own stdout/stderr; then one JSON line goes to the result fd: the ``repr`` of the last
expression's value (if the cell ends with an expression and it is not None), or the error with
its traceback (only the cell's own frames). Imports nothing of ClosedPaw.
"""

from __future__ import annotations

import ast
import contextlib
import json
import linecache
import os
import sys
import traceback
from typing import Any


def run_cell(ns: dict[str, Any], n: int, code: str, value_cap: int) -> dict[str, Any]:
    name = f"<cell {n}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    value: str | None = None
    error: dict[str, str] | None = None
    try:
        tree = ast.parse(code, name, "exec")
        last: ast.Expression | None = None
        tail = tree.body[-1] if tree.body else None
        if isinstance(tail, ast.Expr):
            tree.body.pop()
            last = ast.Expression(tail.value)
        exec(compile(tree, name, "exec"), ns)
        if last is not None:
            v = eval(compile(last, name, "eval"), ns)
            if v is not None:
                ns["_"] = v
                value = repr(v)
                if len(value) > value_cap:
                    cut = len(value) - value_cap
                    value = value[:value_cap] + f" [closedpaw: {cut} characters cut]"
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != name:
            tb = tb.tb_next  # drop the kernel's own frames
        text = "".join(traceback.format_exception(type(e), e, tb))
        try:
            message = str(e)[:value_cap]
        except BaseException:  # a __str__ that raises must not kill the kernel
            message = f"<{type(e).__name__}: str() failed>"
        error = {"name": type(e).__name__[:200], "message": message,
                 "traceback": text[-value_cap:]}
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    return {"value": value, "error": error}


LINE_CAP = 192 * 1024  # the agent drops a kernel whose result line is much larger


def fit(res: dict[str, Any]) -> bytes:
    """``res`` as one JSON line of at most ``LINE_CAP`` bytes: the longest text (value,
    message or traceback) is halved, with a marker, until it fits."""
    while True:
        data = json.dumps(res).encode()
        err = res.get("error")
        spots = [(res, "value")] + ([(err, k) for k in ("name", "message", "traceback")]
                                    if isinstance(err, dict) else [])
        box, key = max(spots, key=lambda sp: len(str(sp[0].get(sp[1]) or "")))
        text = str(box.get(key) or "")
        if len(data) <= LINE_CAP or len(text) < 128:
            return data
        keep = len(text) // 2
        mark = f" [closedpaw: {len(text) - keep} characters cut] "
        box[key] = mark + text[-keep:] if key == "traceback" else text[:keep] + mark


def main() -> None:
    ctl = os.fdopen(int(sys.argv[1]), "rb")
    res = int(sys.argv[2])
    sys.argv = [""]
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    me = os.getpid()
    for n, line in enumerate(ctl, 1):
        req = json.loads(line)
        out = run_cell(ns, n, str(req["code"]), int(req["value_cap"]))
        if os.getpid() != me:
            # a child the cell forked, back from the cell: it ends here, as it would at the
            # end of a `python3 -c` script; only the kernel answers the cell (the child's
            # answer came first and the kernel's was lost) and reads the next one
            os._exit(0)
        data = fit(out) + b"\n"
        while data:
            data = data[os.write(res, data):]


if __name__ == "__main__":
    main()
