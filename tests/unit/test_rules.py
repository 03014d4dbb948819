"""Risk rules and the canonical form: pure code."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import RulesError
from closedpaw.gate.actions import RiskLevel, parse_action
from closedpaw.gate.rules import RuleSet

WS = Path("/srv/ws")
DATA = Path("/var/lib/cp")


def rules(tmp_path: Path, user: str | None = None) -> RuleSet:
    f = tmp_path / "rules.yaml"
    if user is not None:
        f.write_text(user)
    return RuleSet.load(user_file=f, workspace=WS, data_dir=DATA, rules_file=f)


def level(rs: RuleSet, t: str, params: dict[str, object], min_level: str | None = None) -> str:
    d = rs.classify(parse_action(t, params), RiskLevel(min_level) if min_level else None)
    return str(d.level)


@pytest.mark.parametrize(("t", "params", "want"), [
    ("chat", {"message": "hi"}, "low"),
    ("code_execution", {"language": "python", "code": "print(1)"}, "medium"),
    ("code_execution", {"argv": ["ls", "-l"]}, "medium"),
    ("file_read", {"path": "/srv/ws/notes.txt"}, "medium"),
    ("file_read", {"path": "/srv/wsx/notes.txt"}, "high"),
    ("file_read", {"path": "/etc/shadow"}, "high"),
    ("file_write", {"path": "/srv/ws/out.txt", "content": "x"}, "high"),
    ("network_request", {"url": "http://127.0.0.1:1/"}, "high"),
    ("secret_read", {"name": "github"}, "high"),
    ("skill_execution", {"skill": "fs", "install": True}, "high"),
    ("file_write", {"path": "/var/lib/cp/api-token", "content": "x"}, "critical"),
    ("file_read", {"path": "/var/lib/cp/audit/audit.key"}, "critical"),
])
def test_builtin_levels(tmp_path: Path, t: str, params: dict[str, object], want: str) -> None:
    assert level(rules(tmp_path), t, params) == want


@pytest.mark.parametrize(("t", "params"), [
    ("launch_missiles", {}),
    ("code_execution", {"language": "cobol", "code": "x"}),
    ("code_execution", {"language": "python"}),
    ("code_execution", {"language": "python", "code": "1", "argv": ["x"]}),
    ("code_execution", {"language": "python", "code": "1", "policy": "../etc"}),
    ("code_execution", {"language": "python", "code": "1", "extra": 1}),
    ("file_read", {"path": "/srv/ws/../../etc/shadow"}),
    ("file_read", {"path": "relative/path"}),
    ("chat", {"message": 5}),
    ("skill_execution", {"skill": "x", "install": "true"}),
])
def test_unknown_and_unparseable_are_high(tmp_path: Path, t: str,
                                          params: dict[str, object]) -> None:
    rs = rules(tmp_path, "version: 1\nrules:\n  - {action_type: code_execution, level: low}\n")
    parsed = parse_action(t, params)
    assert parsed.action is None and parsed.problem
    assert level(rs, t, params) == "high"


def test_min_level_raises_never_lowers(tmp_path: Path) -> None:
    rs = rules(tmp_path)
    assert level(rs, "chat", {"message": "hi"}, "critical") == "critical"
    assert level(rs, "secret_read", {"name": "x"}, "low") == "high"


@pytest.mark.parametrize("floor", list(RiskLevel))
@pytest.mark.parametrize("t", ["chat", "code_execution", "secret_read", "file_write"])
def test_a_floor_with_a_reason_never_lowers(tmp_path: Path, floor: RiskLevel, t: str) -> None:
    rs = rules(tmp_path)
    params: dict[str, object] = {"chat": {"message": "hi"}, "secret_read": {"name": "x"},
                                 "code_execution": {"language": "python", "code": "1"},
                                 "file_write": {"path": "/etc/cron.d/x", "content": "x"}}[t]
    plain = rs.classify(parse_action(t, params))
    d = rs.classify(parse_action(t, params), floor, "screening flagged it")
    assert d.level.rank == max(plain.level.rank, floor.rank)
    assert "screening flagged it" in d.reason and plain.reason in d.reason


def test_user_rules_come_first(tmp_path: Path) -> None:
    rs = rules(tmp_path, """
version: 1
rules:
  - action_type: network_request
    when: {url.host: {equals: "127.0.0.1"}}
    level: medium
    reason: local service
  - action_type: code_execution
    when: {language: {one_of: [bash, shell]}}
    level: high
""")
    assert level(rs, "network_request", {"url": "http://127.0.0.1:80/"}) == "medium"
    assert level(rs, "network_request", {"url": "http://10.0.0.1/"}) == "high"
    assert level(rs, "code_execution", {"language": "bash", "code": "id"}) == "high"
    assert level(rs, "code_execution", {"language": "python", "code": "1"}) == "medium"


def test_no_rule_can_lower_closedpaws_own_files(tmp_path: Path) -> None:
    rs = rules(tmp_path, "version: 1\nrules:\n  - {action_type: file_write, level: low}\n"
               "  - {action_type: file_read, level: low}\n")
    assert level(rs, "file_write", {"path": "/tmp/x", "content": ""}) == "low"
    assert level(rs, "file_write", {"path": f"{tmp_path}/rules.yaml", "content": ""}) \
        == "critical"
    assert level(rs, "file_read", {"path": "/var/lib/cp/closedpaw.db"}) == "critical"


@pytest.mark.parametrize(("text", "match"), [
    ("rules: [", "not valid YAML"),
    ("version: 2\nrules: []\n", "version"),
    ("version: 1\nrules:\n  - {action_type: nope, level: low}\n", "action_type"),
    ("version: 1\nrules:\n  - {action_type: chat, level: none}\n", "level"),
    ("version: 1\nrules:\n  - {action_type: chat, level: low, when: {msg: {equals: a}}}\n",
     "no parameter"),
    ("version: 1\nrules:\n  - {action_type: chat, level: low, when: {message: {like: a}}}\n",
     "unknown predicate"),
    ("version: 1\nrules:\n  - {action_type: chat, level: low, when: {message: {matches: "
     "'('}}}\n", "regular expression"),
    ("version: 1\nrules:\n  - {action_type: chat, level: low, auto_approve: true}\n",
     "unknown key"),
])
def test_bad_rules_files_are_refused_whole(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(RulesError, match=match):
        rules(tmp_path, text)


def test_canonical_form_and_hash_are_stable() -> None:
    a = parse_action("code_execution", {"code": "print(1)", "language": "python"})
    b = parse_action("code_execution", {"language": "python", "code": "print(1)",
                                        "timeout_s": 60.0})
    assert a.canonical == b.canonical and a.params_sha256 == b.params_sha256
    c = parse_action("code_execution", {"language": "python", "code": "print(2)"})
    assert c.params_sha256 != a.params_sha256
    assert a.action is not None
    assert a.action.parameters.command() == ["python3", "-c", "print(1)"]  # type: ignore[union-attr]


def test_a_workspace_inside_the_data_dir_is_carved_out(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    rs = RuleSet.load(user_file=f, workspace=DATA / "workspace", data_dir=DATA, rules_file=f)
    assert level(rs, "file_read", {"path": "/var/lib/cp/workspace/a.txt"}) == "medium"
    assert level(rs, "file_write", {"path": "/var/lib/cp/workspace/a.txt", "content": ""}) \
        == "high"
    assert level(rs, "file_read", {"path": "/var/lib/cp/workspacex/a"}) == "critical"
    assert level(rs, "file_read", {"path": "/var/lib/cp/api-token"}) == "critical"
    # a workspace that *is* the data directory carves nothing out
    rs = RuleSet.load(user_file=f, workspace=DATA, data_dir=DATA, rules_file=f)
    assert level(rs, "file_read", {"path": "/var/lib/cp/api-token"}) == "critical"


@pytest.mark.parametrize("params", [
    {"language": "python", "code": "#" * (128 * 1024)},
    {"language": "python", "code": "é" * (64 * 1024)},
    {"argv": ["echo", *(["x" * 100_000] * 11)]},
])
def test_code_the_kernel_could_not_exec_is_refused_at_parse(params: dict[str, object]) -> None:
    parsed = parse_action("code_execution", params)
    assert parsed.action is None and parsed.problem and "bytes" in parsed.problem
    assert parse_action("code_execution", {"language": "python",
                                           "code": "#" * 100_000}).action is not None


@pytest.mark.parametrize("pred", ["startswith", "matches", "under", "not_under"])
def test_a_string_predicate_on_a_whole_url_is_refused_when_rules_load(tmp_path: Path,
                                                                      pred: str) -> None:
    with pytest.raises(RulesError) as e:
        rules(tmp_path, f"""
version: 1
rules:
  - action_type: network_request
    when: {{url: {{{pred}: "http://trusted.example"}}}}
    level: medium
""")
    assert "url.host" in str(e.value) and "rules[0].when.url" in str(e.value)


def test_url_rules_judge_the_parsed_host_not_the_spelling(tmp_path: Path) -> None:
    rs = rules(tmp_path, """
version: 1
rules:
  - action_type: network_request
    when: {url.scheme: {equals: https}, url.host: {equals: trusted.example},
           url.port: {equals: 443}, url.path: {under: /api}}
    level: medium
    reason: the trusted API
""")
    ok = "https://trusted.example/api/v1"
    assert level(rs, "network_request", {"url": ok}) == "medium"
    assert level(rs, "network_request", {"url": "https://TRUSTED.example./api/x"}) == "medium"
    for bad in ["http://trusted.example@127.0.0.1/api/x",
                "https://trusted.example@127.0.0.1/api/x",
                "https://trusted.example.evil.test/api/x",
                "https://trusted.example:8443/api/x",
                "http://trusted.example/api/x",
                "https://trusted.example/api/../admin",
                "https://trusted.example/apiary",
                "https://user:pw@127.0.0.1:443/api/x"]:
        assert level(rs, "network_request", {"url": bad}) == "high", bad
