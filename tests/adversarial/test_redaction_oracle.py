"""The redactor must not be an oracle. A user who cannot read a secret prints (or types)
guesses of its value: if the one right guess came back as ``[secret:NAME]``, one medium action
would confirm it, or recover a short one by printing every candidate. Real runc sandboxes,
the real API under uvicorn, a key-file vault.

What stays redacted is what a secret really reached: the output of code handed a secret by
its policy, and values the server holds for itself (a provider's key), in every user's
answers; and every stored value in an admin's answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.gate import Gate
from closedpaw.settings import Settings
from closedpaw.vault import Vault
from tests.conftest import TEST_CGROUP, TEST_STATE, leftovers, require_runtime
from tests.integration.conftest import Live, live_server, wait_for

PIN = "482137"                                   # an admin's secret: a user may never read it
API_KEY = "sk-handed-7f3a9c2e5b1d"               # handed to code by the policy "withkey"
HELD = "pk-provider-0c4e8a2f6b9d"                # the server's own (a provider's key)

POLICIES = """
version: 1
policies:
  python:
    image: host
  withkey:
    image: host
    secrets: {API_TOKEN: API_KEY}
"""

GUESSES = "for g in range(482100, 482200):\n    print(g)\n"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Live, Gate, dict[str, str]]]:
    require_runtime("runc")
    (tmp_path / "policies.yaml").write_text(POLICIES)
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP,
                    runtime="runc", code_pool=False, policy_file=tmp_path / "policies.yaml")
    with Vault(s.database_url) as v:
        v.init_key_file(s.data_dir / "vault.key")
        v.set("ADMIN_PIN", PIN, "admin")
        v.set("API_KEY", API_KEY, "standard")
        v.set("PROVIDER_KEY", HELD, "standard")
    gate = Gate(s)
    try:
        with live_server(s, gate) as lv:
            assert gate.context.secret_resolver is not None
            assert gate.context.secret_resolver("PROVIDER_KEY") == HELD   # as a provider does
            toks = {"alice": gate.create_principal("alice", "user"),
                    "carol": gate.create_principal("carol", "admin")}
            yield lv, gate, toks
    finally:
        gate.close()
    assert not leftovers(s)


def _run(c: httpx.Client, code: str, policy: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"language": "python", "code": code}
    if policy:
        params["policy"] = policy
    r = c.post("/api/actions", json={"action_type": "code_execution", "parameters": params})
    assert r.status_code == 201, r.text
    a = r.json()
    if a["status"] == "pending":   # sandboxed high code: its requester approves it
        c.post(f"/api/actions/{a['action_id']}/approve",
               json={"params_sha256": a["params_sha256"]}).raise_for_status()

    def done() -> dict[str, Any] | None:
        got: dict[str, Any] = c.get(f"/api/actions/{a['action_id']}").json()
        return got if got["status"] in ("completed", "failed") else None
    return wait_for(done, "the code's end", 120)  # type: ignore[no-any-return]


def test_a_users_guesses_come_back_as_printed_whichever_is_a_secret(
        live: tuple[Live, Gate, dict[str, str]]) -> None:
    lv, gate, toks = live
    with lv.client(toks["alice"]) as alice, lv.client(toks["carol"]) as carol:
        a = _run(alice, GUESSES)
        assert a["status"] == "completed", a
        # every candidate as printed: the right one is not told apart
        assert a["result"]["stdout"].split() == [str(g) for g in range(482100, 482200)]
        assert PIN in (gate.get(a["action_id"]).result or {})["stdout"]   # stored as printed
        # typed into parameters (and echoed by the list and the action's page): as typed
        typed = _run(alice, f"x = '{PIN}'\nprint(len(x))")
        assert PIN in alice.get(f"/api/actions/{typed['action_id']}").json()[
            "parameters"]["code"]
        listing = alice.get("/api/actions", params={"limit": 10}).text
        assert PIN in listing and "[secret:" not in listing
        # an admin may read every secret: their answers are redacted of every stored value
        seen = carol.get(f"/api/actions/{a['action_id']}").json()["result"]["stdout"]
        assert PIN not in seen and "[secret:ADMIN_PIN]" in seen.split()


def test_what_a_secret_really_reached_stays_redacted_for_the_user(
        live: tuple[Live, Gate, dict[str, str]]) -> None:
    lv, gate, toks = live
    code = ("import base64, os\nv = os.environ['API_TOKEN']\nprint('env', v)\n"
            "print('b64', base64.b64encode(v.encode()).decode())\n"
            f"print('held', {HELD!r})\n" + GUESSES)
    with lv.client(toks["alice"]) as alice:
        a = _run(alice, code, policy="withkey")
        assert a["status"] == "completed", a
        lines = a["result"]["stdout"].splitlines()
        assert lines[0] == "env [secret:API_KEY]"
        assert lines[1].startswith("b64 [secret:API_KEY]")   # (its last padded characters stay)
        assert lines[2] == "held [secret:PROVIDER_KEY]"   # the server's own key, anywhere
        assert lines[3:] == [str(g) for g in range(482100, 482200)]   # not handed: no oracle
        body = alice.get(f"/api/actions/{a['action_id']}").text
        assert API_KEY not in body and HELD not in body
    stored = gate.get(a["action_id"]).result or {}
    assert API_KEY not in str(stored) and HELD not in str(stored)   # redacted before stored
