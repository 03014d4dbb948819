"""The gate's settings: environment parsing, precedence and derived paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import ConfigError
from closedpaw.settings import Settings, all_settings
from closedpaw.settings._field import ENV_PREFIX, spec_of


def test_defaults_derive_from_the_data_dir() -> None:
    s = Settings.of(data_dir=Path("/d"))
    assert s.database_url == "sqlite:////d/closedpaw.db"
    assert s.rules_path == Path("/d/rules.yaml")
    assert s.workspace_path == Path("/d/workspace")
    assert s.audit_dir == Path("/d/audit") and s.token_file == Path("/d/api-token")
    assert s.api_base_url == "http://127.0.0.1:8765"
    assert s.gate.approval_ttl_s == 900 and not s.gate.require_distinct_approver


def test_environment() -> None:
    s = Settings.from_env({"CLOSEDPAW_DATA_DIR": "/x", "CLOSEDPAW_DB_URL": "postgresql://h/db",
                           "CLOSEDPAW_APPROVAL_TTL_S": "60",
                           "CLOSEDPAW_RATE_LIMIT_PER_MINUTE": "10",
                           "CLOSEDPAW_REQUIRE_DISTINCT_APPROVER": "yes",
                           "CLOSEDPAW_API_HOST": "::1", "CLOSEDPAW_API_PORT": "9000",
                           "CLOSEDPAW_RULES_FILE": "/etc/cp-rules.yaml"})
    assert s.database_url == "postgresql://h/db" and s.gate.approval_ttl_s == 60
    assert s.api.rate_limit_per_minute == 10 and s.gate.require_distinct_approver
    assert s.api_base_url == "http://[::1]:9000"
    assert s.rules_path == Path("/etc/cp-rules.yaml")
    # an explicit value beats the environment
    assert s.with_(approval_ttl_s=5.0).gate.approval_ttl_s == 5.0


@pytest.mark.parametrize(("env", "match"), [
    ({"CLOSEDPAW_REQUIRE_DISTINCT_APPROVER": "maybe"}, "not a boolean"),
    ({"CLOSEDPAW_APPROVAL_TTL_S": "soon"}, "not a number"),
    ({"CLOSEDPAW_APPROVAL_TTL_S": "0"}, "approval_ttl_s"),
    ({"CLOSEDPAW_RATE_LIMIT_PER_MINUTE": "0"}, "rate_limit_per_minute"),
    ({"CLOSEDPAW_API_PORT": "70000"}, "api_port"),
    ({"CLOSEDPAW_MAX_PENDING_PER_PRINCIPAL": "0"}, "max_pending_per_principal"),
    ({"CLOSEDPAW_WORKERS": "0"}, "workers"),
    ({"CLOSEDPAW_HEADER_TIMEOUT_S": "0"}, "timeouts"),
    ({"CLOSEDPAW_MAX_CONNECTIONS": "2"}, "max_connections"),
    ({"CLOSEDPAW_USERNS_BASE": "1000"}, "userns_base"),
    ({"CLOSEDPAW_USERNS_BASE": "4294000000"}, "userns_base"),
    ({"CLOSEDPAW_USERNS_SLOTS": "0"}, "userns_slots"),
])
def test_bad_values_are_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env(env)


def test_every_setting_declares_the_env_name_matching_its_field() -> None:
    names = [f.name for _, f in all_settings()]
    assert len(names) == len(set(names)), "field names must be unique across sections"
    for _, f in all_settings():
        env, _, _, doc = spec_of(f)
        assert env == ENV_PREFIX + f.name.upper(), f.name
        assert doc, f"{f.name} has no description"


def test_every_setting_is_read_from_its_environment_variable() -> None:
    """One loader reads each variable (a value unlike the default proves it was read)."""
    env = {"CLOSEDPAW_RUNTIME": "runc", "CLOSEDPAW_MAX_SANDBOXES": "7",
           "CLOSEDPAW_OUTPUT_CAP_BYTES": "99", "CLOSEDPAW_CGROUP_PARENT": "cp-x",
           "CLOSEDPAW_IMAGE_DIR": "/i", "CLOSEDPAW_POLICY_FILE": "/p.yaml",
           "CLOSEDPAW_PID_WAIT_S": "5",
           "CLOSEDPAW_POOL_SIZE": "3", "CLOSEDPAW_POOL_IDLE_TIMEOUT_S": "9",
           "CLOSEDPAW_POOL_SETTLE_S": "0.5",
           "CLOSEDPAW_SNAPSHOT_DIR": "/snap", "CLOSEDPAW_DB_URL": "sqlite:////db",
           "CLOSEDPAW_RULES_FILE": "/r.yaml", "CLOSEDPAW_WORKSPACE_DIR": "/w",
           "CLOSEDPAW_APPROVAL_TTL_S": "61", "CLOSEDPAW_REQUIRE_DISTINCT_APPROVER": "1",
           "CLOSEDPAW_API_HOST": "::1", "CLOSEDPAW_API_PORT": "1", "CLOSEDPAW_API_URL": "http://u",
           "CLOSEDPAW_API_TOKEN": "t", "CLOSEDPAW_RATE_LIMIT_PER_MINUTE": "5",
           "CLOSEDPAW_STATE_DIR": "/st", "CLOSEDPAW_DATA_DIR": "/da",
           "CLOSEDPAW_IMPORT_MAX_UNPACKED_BYTES": "11", "CLOSEDPAW_IMPORT_MAX_FILE_BYTES": "12",
           "CLOSEDPAW_IMPORT_MAX_BLOB_BYTES": "13", "CLOSEDPAW_IMPORT_MAX_HEADER_BYTES": "14",
           "CLOSEDPAW_IMPORT_MAX_MEMBERS": "15", "CLOSEDPAW_IMPORT_MAX_LAYERS": "16",
           "CLOSEDPAW_IMPORT_MAX_DEPTH": "17", "CLOSEDPAW_IMPORT_DEADLINE_S": "18",
           "CLOSEDPAW_VAULT_KEY_FILE": "/k", "CLOSEDPAW_VAULT_UNLOCK_AT_START": "0",
           "CLOSEDPAW_VAULT_KDF_MEMORY_KIB": "65536", "CLOSEDPAW_VAULT_KDF_ITERATIONS": "3",
           "CLOSEDPAW_USERNS": "0", "CLOSEDPAW_USERNS_BASE": "3000000000",
           "CLOSEDPAW_USERNS_SLOTS": "8", "CLOSEDPAW_USERNS_DIR": "/u"}
    env.update({"CLOSEDPAW_SKILLS_DIR": "/sk", "CLOSEDPAW_FS_ROOTS": "/a:/b",
                "CLOSEDPAW_FS_MAX_BYTES": "10", "CLOSEDPAW_FS_MAX_ENTRIES": "10"})
    env.update({  # issue 13
        "CLOSEDPAW_MAX_PENDING_PER_PRINCIPAL": "3", "CLOSEDPAW_MAX_PENDING_BYTES_PER_PRINCIPAL":
        "4096", "CLOSEDPAW_WORKERS": "2", "CLOSEDPAW_MAX_EXECUTIONS_PER_PRINCIPAL": "1",
        "CLOSEDPAW_MAX_BODY_BYTES": "2048", "CLOSEDPAW_MAX_CONNECTIONS": "64",
        "CLOSEDPAW_HEADER_TIMEOUT_S": "2", "CLOSEDPAW_BODY_IDLE_TIMEOUT_S": "3",
        "CLOSEDPAW_KEEP_ALIVE_S": "4", "CLOSEDPAW_MAX_STREAMS_PER_PRINCIPAL": "2",
        "CLOSEDPAW_STREAM_RECHECK_S": "1", "CLOSEDPAW_SUMMARY_PERIOD_S": "7",
        "CLOSEDPAW_AUDIT_SEGMENT_BYTES": "8192"})
    env.update({"CLOSEDPAW_WEB_SESSION_IDLE_S": "60", "CLOSEDPAW_WEB_LINK_TTL_S": "30"})
    env.update({  # issue 14
        "CLOSEDPAW_DEFAULT_PROVIDER": "local", "CLOSEDPAW_OLLAMA_URL": "http://127.0.0.1:1",
        "CLOSEDPAW_LOCAL_MODEL_PATH": "/m.gguf", "CLOSEDPAW_PROVIDERS_FILE": "/prov.yaml",
        "CLOSEDPAW_TURN_MAX_TOOL_CALLS": "2", "CLOSEDPAW_TURN_MAX_TOKENS": "99",
        "CLOSEDPAW_TURN_WALL_S": "7", "CLOSEDPAW_TOOL_RESULT_CHARS": "77",
        "CLOSEDPAW_CODE_POOL": "0"})
    env.update({  # issue 11: sandbox sessions and the MCP server
        "CLOSEDPAW_SESSION_IDLE_S": "30", "CLOSEDPAW_MAX_SANDBOX_SESSIONS": "3",
        "CLOSEDPAW_MAX_SANDBOX_SESSIONS_PER_PRINCIPAL": "2", "CLOSEDPAW_MCP_MAX_CLIENTS": "9",
        "CLOSEDPAW_MCP_MAX_CLIENTS_PER_PRINCIPAL": "3"})
    env.update({  # issue 12
        "CLOSEDPAW_CHANNELS_FILE": "/ch.yaml", "CLOSEDPAW_CHANNEL_STRANGER_AUDIT_PER_MINUTE": "5",
        "CLOSEDPAW_CHANNEL_MAX_FILE_CHARS": "9"})
    assert set(env) == {spec_of(f)[0] for _, f in all_settings()}
    s, d = Settings.from_env(env), Settings()
    for section, f in all_settings():
        got = getattr(getattr(s, section) if section else s, f.name)
        default = getattr(getattr(d, section) if section else d, f.name)
        assert got != default, f.name


def test_old_environment_names_still_work_and_the_new_one_wins() -> None:
    old = Settings.from_env({"CLOSEDPAW_APPROVAL_TTL": "60", "CLOSEDPAW_RATE_LIMIT": "10",
                             "CLOSEDPAW_POOL_IDLE_TIMEOUT": "3"})
    assert (old.gate.approval_ttl_s, old.api.rate_limit_per_minute,
            old.pools.pool_idle_timeout_s) == (60, 10, 3)
    both = Settings.from_env({"CLOSEDPAW_RATE_LIMIT": "10",
                              "CLOSEDPAW_RATE_LIMIT_PER_MINUTE": "20"})
    assert both.api.rate_limit_per_minute == 20


def test_precedence_explicit_over_environment_over_default() -> None:
    env = {"CLOSEDPAW_MAX_SANDBOXES": "4", "CLOSEDPAW_DATA_DIR": "/e"}
    s = Settings.from_env(env, max_sandboxes=9, data_dir=None)
    assert s.sandbox.max_sandboxes == 9 and s.data_dir == Path("/e")
    assert Settings.from_env({}).sandbox.max_sandboxes == 32
    with pytest.raises(ConfigError, match="nope: unknown setting"):
        Settings.of(nope=1)


@pytest.mark.parametrize(("var", "value"), [("CLOSEDPAW_VAULT_KDF_MEMORY_KIB", "8192"),
                                            ("CLOSEDPAW_VAULT_KDF_ITERATIONS", "1")])
def test_vault_kdf_below_the_owasp_floor_is_refused(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match="at least"):
        Settings.from_env({var: value})


def test_secret_variables_are_read_apart_and_never_printed() -> None:
    """``CLOSEDPAW_SECRET_<NAME>`` is not a setting of its own: the loader keeps them for the
    secret resolver, out of repr and out of the per-field table."""
    s = Settings.from_env({"CLOSEDPAW_SECRET_OPENAI_KEY": "sk-xyz", "CLOSEDPAW_SECRET_": "x"})
    assert dict(s.secret_env) == {"OPENAI_KEY": "sk-xyz"}
    assert "sk-xyz" not in repr(s)
    assert Settings.of().secret_env == {}
