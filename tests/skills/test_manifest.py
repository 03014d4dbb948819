"""skill.yaml: every named check refuses with the file and the dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from closedpaw.errors import InvalidRequest, SkillInvalid
from closedpaw.skills.manifest import CHECKS, load_manifest, parse_manifest, validate_arguments

GOOD: dict[str, Any] = {
    "name": "wc", "version": "1.2.3", "description": "counts words",
    "entry": ["python3", "/input/main.py"], "policy": "python",
    "inputs": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 10}},
               "required": ["text"], "additionalProperties": False},
    "capabilities": {"paths": [{"host": "/srv/a", "mount": "/data", "mode": "ro"}],
                     "secrets": ["API_TOKEN"], "network": "none",
                     "limits": {"memory": "256m", "cpus": 0.5, "pids": 32, "timeout": 30}},
}


def bad(tmp_path: Path, **change: Any) -> SkillInvalid:
    doc = {**GOOD, **change}
    p = tmp_path / "skill.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(SkillInvalid) as e:
        load_manifest(p)
    assert str(p) in str(e.value)
    return e.value


def test_a_good_manifest_parses_with_its_capabilities(tmp_path: Path) -> None:
    p = tmp_path / "skill.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    m = load_manifest(p)
    assert m.capabilities() == {
        "paths": [{"host": "/srv/a", "mount": "/data", "mode": "ro"}],
        "secrets": ["API_TOKEN"], "network": "none",
        "limits": {"memory_mb": 256, "cpus": 0.5, "pids": 32, "timeout_s": 30.0}}
    assert [n for n, _ in CHECKS][:2] == ["keys_known", "name_valid"]


@pytest.mark.parametrize(("change", "key", "check"), [
    ({"entrypoint": ["x"]}, "entrypoint", "keys_known"),
    ({"name": "Bad Name"}, "name", "name_valid"),
    ({"version": "one"}, "version", "version_valid"),
    ({"entry": []}, "entry", "entry_valid"),
    ({"entry": "python3 main.py"}, "entry", "entry_valid"),
    ({"image": "python"}, "image", "runs_on_valid"),
    ({"inputs": {"type": "object", "patternProperties": {}}}, "inputs.patternProperties",
     "inputs_schema_valid"),
    ({"inputs": {"type": "string"}}, "inputs.type", "inputs_schema_valid"),
    ({"capabilities": {"paths": [{"host": "/srv/a", "mount": "/data", "mode": "rwx"}]}},
     "capabilities.paths.0.mode", "paths_valid"),
    ({"capabilities": {"paths": [{"host": "../etc", "mount": "/data"}]}},
     "capabilities.paths.0.host", "paths_valid"),
    ({"capabilities": {"paths": [{"host": "/srv", "mount": "/input/x"}]}},
     "capabilities.paths.0.mount", "paths_valid"),
    ({"capabilities": {"paths": [{"host": "/srv", "mount": "/d", "moed": "ro"}]}},
     "capabilities.paths.0.moed", "paths_valid"),
    ({"capabilities": {"secrets": ["lower"]}}, "capabilities.secrets.0", "secrets_valid"),
    ({"capabilities": {"network": "any"}}, "capabilities.network", "network_none"),
    ({"capabilities": {"limits": {"memory": "4k"}}}, "capabilities.limits.memory",
     "limits_valid"),
    ({"capabilities": {"limits": {"memroy": "4m"}}}, "capabilities.limits.memroy",
     "limits_valid"),
    ({"capabilities": {"limits": {"timeout": 0}}}, "capabilities.limits.timeout",
     "limits_valid"),
    ({"capabilities": {"sudo": True}}, "capabilities.sudo", "keys_known"),
])
def test_each_check_names_the_dotted_key(tmp_path: Path, change: dict[str, Any], key: str,
                                         check: str) -> None:
    e = bad(tmp_path, **change)
    assert (check, key) in [(c, k) for c, k, _ in e.problems], e.problems
    assert f"{key}:" in str(e)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    e = bad(tmp_path, name="X", version="v", entry=[])
    assert {k for _, k, _ in e.problems} >= {"name", "version", "entry"}


def test_a_manifest_that_is_a_link_or_not_yaml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "skill.yaml").symlink_to(tmp_path / "real.yaml")
    with pytest.raises(SkillInvalid, match=r"skill.yaml"):
        load_manifest(tmp_path / "skill.yaml")
    (tmp_path / "b.yaml").write_text("name: [unclosed")
    with pytest.raises(SkillInvalid, match=r"not valid YAML"):
        load_manifest(tmp_path / "b.yaml")
    with pytest.raises(SkillInvalid, match=r"must be a mapping"):
        parse_manifest(["a"], "x.yaml")


def test_arguments_are_checked_against_the_schema() -> None:
    schema = GOOD["inputs"]
    validate_arguments(schema, {"text": "short"})
    with pytest.raises(InvalidRequest, match=r"arguments.text: is required"):
        validate_arguments(schema, {})
    with pytest.raises(InvalidRequest, match=r"arguments.text: length"):
        validate_arguments(schema, {"text": "x" * 11})
    with pytest.raises(InvalidRequest, match=r"arguments.other: unknown"):
        validate_arguments(schema, {"text": "a", "other": 1})
    with pytest.raises(InvalidRequest, match=r"must be of type string"):
        validate_arguments(schema, {"text": 5})
