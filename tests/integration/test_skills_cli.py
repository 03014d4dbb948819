"""``closedpaw skill install | list | show | rm | run`` against a live server and real runc
sandboxes: an install waits for an approval that shows the capabilities."""

from __future__ import annotations

import json
from pathlib import Path

from closedpaw.settings import Settings
from tests.conftest import TEST_CGROUP, TEST_STATE, require_runtime
from tests.integration.conftest import live_server
from tests.integration.test_gate_cli import cli, finished
from tests.skills.support import write_skill


def test_install_approve_list_show_run_rm(tmp_path: Path) -> None:
    require_runtime("runc")
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE,
                    cgroup_parent=TEST_CGROUP, runtime="runc")
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "words.txt").write_text("one two three\n")
    pkg = write_skill(tmp_path / "pkgs", "wc", caps={
        "paths": [{"host": str(data), "mount": "/data", "mode": "ro"}]},
        code="print(len(open('/data/words.txt').read().split()))")
    with live_server(s) as live, live.client() as c:
        env = {"CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_API_URL": live.url}
        r = cli("skill", "install", str(pkg), **env)
        assert r.returncode == 0, r.stderr
        assert "pending approval: closedpaw actions approve" in r.stdout
        assert f'"host":"{data}"' in r.stdout and '"mode":"ro"' in r.stdout   # the approver
        aid = r.stdout.split("actions approve ")[1].split()[0]
        sha = r.stdout.split("--sha256 ")[1].split()[0]
        r = cli("actions", "approve", aid, "--sha256", sha, **env)
        assert r.returncode == 0, r.stderr
        assert finished(c, aid)["status"] == "completed"
        r = cli("skill", "list", **env)
        assert r.returncode == 0 and "wc" in r.stdout and "filesystem" in r.stdout, r
        r = cli("skill", "show", "wc", "--verify", "--json", **env)
        shown = json.loads(r.stdout)
        assert shown["verified"] and shown["capabilities"]["paths"][0]["host"] == str(data)
        # a skill with a host path is high: the run waits for an approval
        r = cli("skill", "run", "wc", "--", "{}", **env)
        assert r.returncode == 0 and "pending approval" in r.stdout, r.stderr
        aid = r.stdout.split("actions approve ")[1].split()[0]
        sha = r.stdout.split("--sha256 ")[1].split()[0]
        assert cli("actions", "approve", aid, "--sha256", sha, **env).returncode == 0
        a = finished(c, aid)
        assert a["status"] == "completed" and a["result"]["stdout"] == "3\n", a
        r = cli("skill", "run", "wc", "--", "[1]", **env)
        assert r.returncode == 2 and "must be a JSON object" in r.stderr
        r = cli("skill", "run", "nope", "--", "{}", **env)
        assert r.returncode == 1 and "no skill 'nope'" in r.stderr
        assert cli("skill", "rm", "wc", **env).returncode == 0
        assert "wc " not in cli("skill", "list", **env).stdout
    bad = write_skill(tmp_path / "bad", "bad", caps={"network": "open"})
    r = cli("skill", "install", str(bad), "--url", "http://127.0.0.1:9",
            CLOSEDPAW_DATA_DIR=str(s.data_dir))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{bad}/skill.yaml" in r.stderr and "capabilities.network" in r.stderr
