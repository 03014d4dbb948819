"""``network_request`` from the host, after the gate let it through (a human saw the exact
URL when the level was high). No redirects are followed; the body is capped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.errors import GateError
from closedpaw.gate.actions import NetworkRequestParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "BODY_CAP", "request"]

BODY_CAP = 1024 * 1024


def request(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, NetworkRequestParams)
    p = params
    import httpx

    try:
        with httpx.Client(timeout=p.timeout_s, follow_redirects=False, trust_env=False) as c, \
                c.stream(p.method, p.url, headers=p.headers,
                         content=p.body.encode() if p.body is not None else None) as r:
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > BODY_CAP:
                    break
            return {"status_code": r.status_code, "headers": dict(r.headers),
                    "body": body[:BODY_CAP].decode("utf-8", "replace"),
                    "truncated": len(body) > BODY_CAP}
    except httpx.HTTPError as e:
        raise GateError(f"request to {p.url} failed: {type(e).__name__}: {e}") from None


ACTION_TYPES = {"network_request": request}
