"""``closedpaw image ...``, ``closedpaw policy ...`` and ``run --image/--policy/--lang``, run
as a user would run them: real images, real runtimes, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from closedpaw.sandbox import SandboxManager, SandboxSpec
from closedpaw.sandbox.images.store import Image, ImageStore
from tests.conftest import (
    TEST_CGROUP,
    require_runtime,
    sandbox_settings,
    settled_leftovers,
)
from tests.oci_support import Entry, layer_tar, oci_layout

CLI = str(Path(sys.executable).with_name("closedpaw"))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
        user: tuple[int, int] | None = None) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CLOSEDPAW_STATE_DIR": str(sandbox_settings().state_dir),
            "CLOSEDPAW_DATA_DIR": str(sandbox_settings().data_dir),
            "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP,
            "CLOSEDPAW_POLICY_FILE": "/nonexistent/closedpaw-policies.yaml", **(env or {})}
    cmd = [CLI, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout,
                          check=False)


def one_line_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.startswith("closedpaw: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in p.stderr, p.stderr


@pytest.fixture(autouse=True)
def _no_leaks() -> object:
    yield
    left = settled_leftovers(sandbox_settings())
    assert not left, left


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_the_issue_example_prints_2(rt: str, built_images: dict[str, Image]) -> None:
    require_runtime(rt)
    p = cli("run", "--runtime", rt, "--image", "node", "--", "node", "-e",
            "console.log(1+1)")
    assert (p.returncode, p.stdout, p.stderr) == (0, "2\n", "")


@pytest.mark.parametrize("rt", ["runc", "runsc"])
@pytest.mark.parametrize(("lang", "code", "out"), [
    ("python", "import sys; print('py', sys.argv[1:])", "py ['x', 'y']\n"),
    ("node", "console.log('node', process.argv.slice(2).join(','))", "node x,y\n"),
    ("bash", 'echo "bash $1 $2"', "bash x y\n"),
])
def test_lang_runs_code_under_its_policy(rt: str, lang: str, code: str, out: str,
                                         built_images: dict[str, Image]) -> None:
    require_runtime(rt)
    p = cli("run", "--runtime", rt, "--lang", lang, "-c", code, "--", "x", "y")
    assert (p.returncode, p.stdout) == (0, out), p.stderr


def test_policy_drives_the_run_and_flags_override_it(tmp_path: Path,
                                                     built_images: dict[str, Image]) -> None:
    require_runtime("runc")
    pol = tmp_path / "policies.yaml"
    pol.write_text("policies:\n  tiny:\n    image: python\n    memory: 200m\n    cpus: 0.5\n"
                   "    pids: 20\n    readonly_root: true\n    env: {GREETING: hi}\n")
    env = {"CLOSEDPAW_POLICY_FILE": str(pol)}
    p = cli("run", "--runtime", "runc", "--policy", "tiny", "--json", "--", "python3", "-c",
            "import os; print(os.environ['GREETING'])", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["stdout"] == "hi\n"
    iso = d["isolation"]
    assert (iso["memory_limit_mb"], iso["cpu_cores"], iso["pids_limit"], iso["rootfs"]) == \
        (200, 0.5, 20, "python:overlay:ro")
    p = cli("run", "--runtime", "runc", "--policy", "tiny", "--memory", "300m", "--json",
            "--", "true", env=env)
    assert json.loads(p.stdout)["isolation"]["memory_limit_mb"] == 300
    p = cli("policy", "show", "tiny", "--json", env=env)
    shown = json.loads(p.stdout)
    assert shown["memory_mb"] == 200 and shown["sources"] == [str(pol)]
    p = cli("policy", "list", env=env)
    assert p.returncode == 0 and all(n in p.stdout for n in
                                     ("default", "python", "node", "shell", "multi", "tiny"))


def test_policy_errors_name_the_key(tmp_path: Path) -> None:
    pol = tmp_path / "policies.yaml"
    pol.write_text("policies:\n  python:\n    memroy: 1g\n")
    for args in (("policy", "list"), ("run", "--policy", "python", "--", "true"),
                 ("run", "--lang", "python", "-c", "1")):
        one_line_error(cli(*args, env={"CLOSEDPAW_POLICY_FILE": str(pol)}),
                       "policies.python.memroy", "unknown key", str(pol))
    pol.write_text("policies:\n  python:\n    memory: 1x\n")
    one_line_error(cli("policy", "show", "python", env={"CLOSEDPAW_POLICY_FILE": str(pol)}),
                   "policies.python.memory")
    one_line_error(cli("policy", "show", "nope"), "nope", "no such policy")
    one_line_error(cli("run", "--policy", "nope", "--", "true"), "no such policy")


def test_usage_errors() -> None:
    one_line_error(cli("run", "-c", "print(1)"), "needs --lang")
    one_line_error(cli("run", "--lang", "python"), "needs the code with -c")
    one_line_error(cli("run", "--image", "Bad/Name", "--", "true"), "image")
    one_line_error(cli("run", "--image", "nope", "--", "true"), "not in the store")
    one_line_error(cli("image", "inspect", "nope"), "not in the store")
    one_line_error(cli("image", "rm", "host"), "built in")
    one_line_error(cli("image", "build", "cobol"), "no recipe")


def test_image_list_and_inspect(built_images: dict[str, Image]) -> None:
    p = cli("image", "list", "--json")
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert {"host", "python", "node", "shell", "multi"} <= set(rows)
    assert rows["node"]["source"]["packages"] == ["nodejs"]
    assert rows["host"]["source"]["type"] == "host-bind"
    p = cli("image", "list")
    assert p.returncode == 0 and "debootstrap bookworm + nodejs" in p.stdout
    p = cli("image", "inspect", "python", "--verify")
    d = json.loads(p.stdout)
    assert p.returncode == 0 and d["verified"] is True
    assert d["digest"] == ImageStore(sandbox_settings().images).get("python").digest


def test_image_import_rm_and_refusal(tmp_path: Path) -> None:
    good = oci_layout(tmp_path / "good", [layer_tar([Entry("hello", data=b"hi\n")])])
    p = cli("image", "import", str(good), "--name", "test-cli-import")
    assert p.returncode == 0 and p.stdout.startswith("imported test-cli-import sha256:"), \
        p.stderr
    try:
        assert "test-cli-import" in cli("image", "list").stdout
    finally:
        p = cli("image", "rm", "test-cli-import")
    assert (p.returncode, p.stdout) == (0, "removed test-cli-import\n")
    one_line_error(cli("image", "inspect", "test-cli-import"), "not in the store")
    evil = oci_layout(tmp_path / "evil", [layer_tar([Entry("../../x", data=b"")])])
    one_line_error(cli("image", "import", str(evil), "--name", "test-cli-evil"), "'..'")
    one_line_error(cli("image", "import", str(tmp_path / "absent")), "no such file")


def test_image_build_shows_progress_and_rebuilds(built_images: dict[str, Image]) -> None:
    store = ImageStore(sandbox_settings().images)
    before = store.get("shell")
    p = cli("image", "build", "shell")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("built shell sha256:") and p.stdout.count("\n") == 1
    for step in ("base", "copy", "install", "clean", "digest"):  # progress, one line a step
        assert f"closedpaw: building shell: {step}: " in p.stderr, p.stderr
    after = store.get("shell")
    assert after.created >= before.created and store.verify("shell")
    assert not (after.rootfs / "var/lib/apt/lists").exists() or \
        not any((after.rootfs / "var/lib/apt/lists").iterdir())
    assert not any((after.rootfs / "var/cache/apt").iterdir())


def test_changing_images_as_another_user_is_refused_cleanly(
        tmp_path: Path, built_images: dict[str, Image]) -> None:
    nobody = (65534, 65534)
    good = oci_layout(tmp_path / "good", [layer_tar([Entry("hello", data=b"hi\n")])])
    tmp_path.chmod(0o755)
    one_line_error(cli("image", "import", str(good), "--name", "x", user=nobody), "needs root")
    one_line_error(cli("image", "rm", "shell", user=nobody), "changing images needs root")
    one_line_error(cli("image", "build", "shell", user=nobody), "needs root")
    p = cli("image", "list", "--json", user=nobody)   # reading the store is fine
    assert p.returncode == 0 and "shell" in {r["name"] for r in json.loads(p.stdout)}
    assert ImageStore(sandbox_settings().images).verify("shell")


def test_doctor_reports_images_overlayfs_and_the_policy_file(
        tmp_path: Path, built_images: dict[str, Image]) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("policies: {}\n")
    d = json.loads(cli("doctor", "--json", env={"CLOSEDPAW_POLICY_FILE": str(pol)}).stdout)
    assert {"host", "python", "node", "shell", "multi"} <= set(d["images"])
    assert d["overlayfs"] is True and d["image_dir"] == str(sandbox_settings().images)
    assert (d["policy_file"], d["policy_file_exists"]) == (str(pol), True)
    text = cli("doctor").stdout
    assert "overlayfs yes" in text and "(absent)" in text


def test_help_is_true() -> None:
    p = cli("run", "--help")
    for flag in ("--policy", "--image", "--lang", "-c CODE"):
        assert flag in p.stdout
    p = cli("image", "--help")
    for action in ("build", "list", "import", "rm", "inspect"):
        assert action in p.stdout
    assert "list" in cli("policy", "--help").stdout and "show" in cli("policy", "--help").stdout


@pytest.mark.parametrize("layout", ["empty", "rootfs dir only"])
def test_listing_images_on_a_fresh_data_dir_as_another_user_writes_nothing(layout: str) -> None:
    """The first-run failure: 'image list' used to build the host skeleton (and chmod the data
    directory) when none existed for this host yet, which only root may do: as another user it
    failed with 'Operation not permitted' until some root run had built it. Listing now only
    reads, on a fresh empty data directory too."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="closedpaw-fresh-"))
    try:
        top.chmod(0o755)
        data = top / "data"
        data.mkdir(mode=0o755)
        if layout == "rootfs dir only":
            (data / "rootfs").mkdir(mode=0o755)
        before = sorted(str(p) for p in data.rglob("*"))
        env = {"CLOSEDPAW_DATA_DIR": str(data)}
        p = cli("image", "list", "--json", env=env, user=(65534, 65534))
        assert p.returncode == 0, p.stderr
        (host,) = json.loads(p.stdout)
        assert host["name"] == "host" and host["prepared"] is False
        p = cli("image", "inspect", "host", env=env, user=(65534, 65534))
        assert p.returncode == 0 and json.loads(p.stdout)["digest"] == host["digest"], p.stderr
        assert sorted(str(p) for p in data.rglob("*")) == before
        # the first sandbox run (as root) builds it where the listing said
        s = sandbox_settings().with_(data_dir=data)
        with SandboxManager(s) as mgr:
            assert mgr.run(["true"], SandboxSpec()).exit_code == 0
        p = cli("image", "list", "--json", env=env, user=(65534, 65534))
        (again,) = json.loads(p.stdout)
        assert again["prepared"] is True and again["rootfs"] == host["rootfs"]
        assert Path(host["rootfs"]).is_dir()
    finally:
        shutil.rmtree(top)
