"""``closedpaw.client.Client`` against a real server on 127.0.0.1: the whole approval loop, the
stable error codes, and where its URL and token come from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.client import Client
from closedpaw.errors import ApiRefused, ApiUnreachable, ConfigError
from closedpaw.gate import Gate
from tests.integration.conftest import (
    Live,
    fake_manager,
    gate_settings,
    live_server,
    python_handler,
    wait_for,
)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    s = gate_settings(tmp_path)
    g = Gate(s, manager=fake_manager(s, python_handler))
    try:
        with live_server(s, g) as lv:
            yield lv
    finally:
        g.close()


def test_submit_review_approve_and_read_the_result(live: Live) -> None:
    with Client(live.url, live.token) as api:
        assert api.health() == {"status": "ok"}
        a = api.submit("code_execution", {"language": "python", "code": "print(6*7)"},
                       min_level="high")
        assert a["requires_approval"] and a["status"] == "pending"
        pending = api.pending()
        assert [p["action_id"] for p in pending] == [a["action_id"]]
        assert pending[0]["canonical_parameters"].startswith('{"action_type"')
        with pytest.raises(ApiRefused) as refused:
            api.approve(a["action_id"], "0" * 64)
        assert (refused.value.status, refused.value.error_code) == (409, "approval_refused")
        api.approve(a["action_id"], a["params_sha256"])
        done = wait_for(lambda: (r := api.get_action(a["action_id"]))["status"] == "completed"
                        and r, "the action to complete")
        assert done["result"]["stdout"] == "42\n"
        assert [x["action_id"] for x in api.list_actions(status="completed")] == [
            a["action_id"]]
        assert api.verify_audit()["ok"] is True
        assert api.audit_logs(limit=1)["next_after_seq"] == 1
        assert api.status()["principal"]["role"] == "admin"
        with pytest.raises(ApiRefused) as missing:
            api.get_action("../audit-logs")   # quoted: cannot reach another route
        assert missing.value.status == 404   # not the audit log (200)


def test_a_wrong_token_is_refused_with_its_code(live: Live) -> None:
    with Client(live.url, "cpw_" + "A" * 43) as api, pytest.raises(ApiRefused) as e:
        api.pending()
    assert (e.value.status, e.value.error_code) == (401, "unauthorized")


def test_url_and_token_come_from_the_settings(live: Live, tmp_path: Path) -> None:
    """Defaults: the token in DATA_DIR/api-token; CLOSEDPAW_API_URL via the settings."""
    s = live.settings.with_(api_url=live.url)
    with Client(settings=s) as api:
        assert api.token == live.token and api.base_url == live.url
        assert api.pending() == []
    with pytest.raises(ConfigError, match="cannot read the token from"):
        Client(settings=s, token_file=tmp_path / "nope")


def test_no_server_is_unreachable_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:   # a port nobody listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with Client(url, "t", timeout=5) as api, pytest.raises(ApiUnreachable,
                                                                match="is 'closedpaw serve'"):
            api.health()
