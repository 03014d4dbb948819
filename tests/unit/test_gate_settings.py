"""The gate's settings: environment parsing, precedence and derived paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import ConfigError
from closedpaw.settings import Settings


def test_defaults_derive_from_the_data_dir() -> None:
    s = Settings(data_dir=Path("/d"))
    assert s.database_url == "sqlite:////d/closedpaw.db"
    assert s.rules_path == Path("/d/rules.yaml")
    assert s.workspace_path == Path("/d/workspace")
    assert s.audit_dir == Path("/d/audit") and s.token_file == Path("/d/api-token")
    assert s.api_base_url == "http://127.0.0.1:8765"
    assert s.approval_ttl_s == 900 and not s.require_distinct_approver


def test_environment() -> None:
    s = Settings.from_env({"CLOSEDPAW_DATA_DIR": "/x", "CLOSEDPAW_DB_URL": "postgresql://h/db",
                           "CLOSEDPAW_APPROVAL_TTL": "60", "CLOSEDPAW_RATE_LIMIT": "10",
                           "CLOSEDPAW_REQUIRE_DISTINCT_APPROVER": "yes",
                           "CLOSEDPAW_API_HOST": "::1", "CLOSEDPAW_API_PORT": "9000",
                           "CLOSEDPAW_RULES_FILE": "/etc/cp-rules.yaml"})
    assert s.database_url == "postgresql://h/db" and s.approval_ttl_s == 60
    assert s.rate_limit_per_minute == 10 and s.require_distinct_approver
    assert s.api_base_url == "http://[::1]:9000"
    assert s.rules_path == Path("/etc/cp-rules.yaml")
    # an explicit value beats the environment
    assert s.with_(approval_ttl_s=5.0).approval_ttl_s == 5.0


@pytest.mark.parametrize(("env", "match"), [
    ({"CLOSEDPAW_REQUIRE_DISTINCT_APPROVER": "maybe"}, "not a boolean"),
    ({"CLOSEDPAW_APPROVAL_TTL": "soon"}, "not a number"),
    ({"CLOSEDPAW_APPROVAL_TTL": "0"}, "approval_ttl_s"),
    ({"CLOSEDPAW_RATE_LIMIT": "0"}, "rate_limit_per_minute"),
    ({"CLOSEDPAW_API_PORT": "70000"}, "api_port"),
])
def test_bad_values_are_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env(env)
