"""Every error class reaches an HTTP client as ``{"error": {"code", "message"}}`` with its own
stable code, sandbox errors included (they used to all answer ``error``)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

import closedpaw.errors as errors
from closedpaw.api.errors import install_error_handlers

# one instance of every class (some take structured arguments)
SPECIAL: dict[str, errors.ClosedPawError] = {
    "SpecError": errors.SpecError("memory_mb", "must be at least 16"),
    "BundleRejected": errors.BundleRejected([("no_new_privileges", "not set")]),
    "RuntimeFailure": errors.RuntimeFailure("runc", "create", "boom", "install runc"),
    "AuditChainBroken": errors.AuditChainBroken(3, "hash mismatch"),
    "ApprovalRefused": errors.ApprovalRefused("hash_mismatch", "wrong hash"),
    "RateLimited": errors.RateLimited(7.0),
    "PolicyError": errors.PolicyError("python.memory", "not a size"),
    "ApiRefused": errors.ApiRefused(409, "approval_refused", "wrong hash"),
}


def _instance(name: str) -> errors.ClosedPawError:
    if name in SPECIAL:
        return SPECIAL[name]
    cls: type[errors.ClosedPawError] = getattr(errors, name)
    return cls(f"{name} happened")


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    def raise_it(name: str) -> None:
        raise _instance(name)

    return app


class Client:
    """Requests to the app in this process, over httpx's ASGI transport."""

    def __init__(self) -> None:
        self.app = _app()

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get(path)
        return asyncio.run(go())


@pytest.fixture(scope="module")
def client() -> Client:
    return Client()


@pytest.mark.parametrize("name", errors.__all__)
def test_the_api_answers_each_error_with_its_own_code(client: Client, name: str) -> None:
    r = client.get(f"/raise/{name}")
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == getattr(errors, name).code
    assert body["error"]["message"] == " ".join(str(_instance(name)).split())
    assert r.status_code != 500 or name == "ClosedPawError", (name, r.status_code)


def test_sandbox_errors_say_what_failed(client: Client) -> None:
    r = client.get("/raise/RuntimeUnavailable")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "runtime_unavailable")
    r = client.get("/raise/SandboxNotFound")
    assert r.json()["error"]["code"] == "sandbox_not_found"
