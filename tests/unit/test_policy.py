"""Execution policies: the built-in file, a user file on top, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import PolicyError
from closedpaw.sandbox.policy import LANGUAGES, load_policies


def user(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policies.yaml"
    p.write_text(text)
    return p


def test_builtin_policies() -> None:
    pols = load_policies(None)
    assert pols.names() == ["default", "multi", "node", "python", "shell"]
    py = pols.get("python")
    assert py.spec.image == "python" and py.language == "python"
    assert py.spec.readonly_root is False and py.spec.limits.timeout_s == 300
    assert py.spec.env["PYTHONUNBUFFERED"] == "1"
    d = pols.get("default").spec
    assert d.image == "host" and d.readonly_root is None and d.limits.memory_mb == 512
    for lang, how in LANGUAGES.items():
        assert pols.for_language(lang).name == how.policy


def test_a_missing_user_file_means_builtins_only(tmp_path: Path) -> None:
    assert load_policies(tmp_path / "absent.yaml").names() == load_policies(None).names()


def test_user_file_overrides_keys_and_adds_policies(tmp_path: Path) -> None:
    pols = load_policies(user(tmp_path, """
version: 1
policies:
  python:
    memory: 2g
    tmpfs: {/scratch: 64m}
  data-job:
    description: batch jobs
    image: multi
    cpus: 0.25
    pids: 16
    timeout: 60
    readonly_root: true
    env: {MODE: batch, LEVEL: 3}
"""))
    py = pols.get("python")
    assert py.spec.limits.memory_mb == 2048 and py.spec.tmpfs == {"/scratch": 64}
    assert py.spec.image == "python" and py.spec.limits.timeout_s == 300  # kept
    assert py.sources == ("built-in policies", str(tmp_path / "policies.yaml"))
    job = pols.get("data-job")
    assert (job.spec.image, job.spec.limits.cpu_cores, job.spec.limits.max_processes) == \
        ("multi", 0.25, 16)
    assert job.spec.readonly_root is True and job.spec.env == {"MODE": "batch", "LEVEL": "3"}
    assert job.spec.limits.disk_mb == 1024  # from default
    assert job.to_dict()["description"] == "batch jobs"


@pytest.mark.parametrize(("body", "key"), [
    ("python: {memroy: 1g}", "policies.python.memroy"),
    ("python: {memory: 1x}", "policies.python.memory"),
    ("python: {memory: 4m}", "policies.python.memory"),
    ("python: {cpus: -1}", "policies.python.cpus"),
    ("python: {cpus: fast}", "policies.python.cpus"),
    ("python: {pids: 0}", "policies.python.pids"),
    ("python: {pids: 1.5}", "policies.python.pids"),
    ("python: {disk: huge}", "policies.python.disk"),
    ("python: {timeout: soon}", "policies.python.timeout"),
    ("python: {timeout: 0}", "policies.python.timeout"),
    ("python: {network: host}", "policies.python.network"),
    ("python: {readonly_root: maybe}", "policies.python.readonly_root"),
    ("python: {usr_local: yes please}", "policies.python.usr_local"),
    ("python: {image: ../etc}", "policies.python.image"),
    ("python: {language: cobol}", "policies.python.language"),
    ("python: {env: {1BAD: x}}", "policies.python.env.1BAD"),
    ("python: {env: {A: [1]}}", "policies.python.env.A"),
    ("python: {env: [A]}", "policies.python.env"),
    ("python: {tmpfs: {/proc/x: 8m}}", "policies.python.tmpfs./proc/x"),
    ("python: {tmpfs: {relative: 8m}}", "policies.python.tmpfs.relative"),
    ("python: {tmpfs: {/s: lots}}", "policies.python.tmpfs./s"),
    ("python: {workdir: relative}", "policies.python.workdir"),
    ("python: [1, 2]", "policies.python"),
    ("bad name!: {}", "policies.bad name!"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, body: str, key: str) -> None:
    f = user(tmp_path, "policies:\n  " + body + "\n")
    with pytest.raises(PolicyError) as e:
        load_policies(f)
    assert e.value.key == key, str(e.value)
    assert str(f) in str(e.value) and key in str(e.value)


@pytest.mark.parametrize(("text", "key"), [
    ("versio: 1\n", "versio"),
    ("version: 2\n", "version"),
    ("policies: [a]\n", "policies"),
    ("- a\n", "(file)"),
    ("policies: {python: {memory: [}\n", "(file)"),
])
def test_bad_files_are_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(PolicyError) as e:
        load_policies(user(tmp_path, text))
    assert e.value.key == key, str(e.value)


def test_a_policy_serving_another_language_is_refused_for_code() -> None:
    pols = load_policies(None)
    assert pols.for_language("python", "multi").name == "multi"   # multi declares none
    assert pols.for_language("bash").name == "shell"
    with pytest.raises(PolicyError) as e:
        pols.for_language("node", "python")
    assert e.value.key == "policies.python.language" and "serves python, not node" in str(e.value)


def test_unknown_policy_and_language() -> None:
    pols = load_policies(None)
    with pytest.raises(PolicyError, match="no such policy; known: default"):
        pols.get("nope")
    with pytest.raises(PolicyError, match="lang"):
        pols.for_language("cobol")


def test_the_builtin_file_itself_is_validated() -> None:
    with pytest.raises(PolicyError, match=r"built-in policies: policies\.x\.cpus"):
        load_policies(None, builtin_text="policies:\n  x: {cpus: 0}\n")


def test_usr_local_is_hidden_unless_a_policy_asks(tmp_path: Path) -> None:
    pols = load_policies(user(tmp_path, "policies:\n  tools: {usr_local: true}\n"))
    assert pols.get("tools").spec.usr_local is True
    assert pols.get("tools").to_dict()["usr_local"] is True
    assert not any(pols.get(n).spec.usr_local for n in pols.names() if n != "tools")
