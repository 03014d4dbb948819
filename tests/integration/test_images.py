"""Built images on both real runtimes: each language in its image, the disposable overlay root,
read-only roots by policy, extra tmpfs mounts, code files, and images that stay unchanged.

Under this runsc coreutils' ``ls``/``stat`` fail (statx EINVAL), so the shell checks use bash
builtins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from closedpaw.errors import ImageNotFound
from closedpaw.sandbox.images.store import Image, ImageStore
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

PY = ["python3", "-c", "import sys; print('py', sys.version_info[0])"]
NODE = ["node", "-e", "console.log('node', 1+1)"]
BASH = ["bash", "-c", "echo bash ${BASH_VERSINFO[0]}"]
CASES = [
    ("python", PY, "py 3"), ("node", NODE, "node 2"), ("shell", BASH, "bash 5"),
    ("multi", PY, "py 3"), ("multi", NODE, "node 2"), ("multi", BASH, "bash 5"),
]
SMALL = ResourceLimits(memory_mb=256, disk_mb=16, timeout_s=60)


@pytest.mark.parametrize(("image", "argv", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1][0]}" for c in CASES])
def test_each_language_runs_in_its_image(mgr: SandboxManager, runtime: str,
                                         built_images: dict[str, Image], image: str,
                                         argv: list[str], expected: str) -> None:
    r = mgr.run(argv, SandboxSpec(image=image, limits=SMALL), runtime=runtime)
    assert (r.exit_code, r.stdout_text.strip()) == (0, expected), r.stderr_text
    assert r.isolation.rootfs == f"{image}:overlay:rw"
    assert r.isolation.runtime == runtime
    assert r.isolation.image == image
    assert r.isolation.image_digest == ImageStore(mgr.settings.images).get(image).digest


@pytest.mark.parametrize(("image", "argv"), [("python", NODE), ("node", PY), ("shell", PY)])
def test_images_hold_only_their_own_tools(mgr: SandboxManager, runtime: str,
                                          built_images: dict[str, Image], image: str,
                                          argv: list[str]) -> None:
    """The image, not the host's /usr, is the root: the host has python3 and node."""
    r = mgr.run(argv, SandboxSpec(image=image, limits=SMALL), runtime=runtime)
    assert r.exit_code == 127, (r.stdout_text, r.stderr_text)


def test_overlay_writes_vanish_and_the_image_is_unchanged(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image]) -> None:
    store = ImageStore(mgr.settings.images)
    before = store.get("shell")
    spec = SandboxSpec(image="shell", limits=SMALL)
    write = ("echo secret > /var/tmp/marker && mkdir -p /var/tmp/d && echo x > /var/tmp/d/f "
             "&& read v < /var/tmp/marker && echo $v")
    with mgr.create(spec, runtime=runtime) as sb:
        r = sb.commands.run(["bash", "-c", write])
        assert (r.exit_code, r.stdout_text) == (0, "secret\n"), r.stderr_text
        r = sb.commands.run(["bash", "-c", "read v < /var/tmp/marker && echo $v"])
        assert r.stdout_text == "secret\n"  # the overlay lives as long as the sandbox
    assert not (before.rootfs / "var/tmp/marker").exists()
    r = mgr.run(["bash", "-c", "[ -e /var/tmp/marker ] && echo present || echo gone"], spec,
                runtime=runtime)
    assert r.stdout_text == "gone\n", r.stderr_text
    assert store.verify("shell"), "the shell image changed"
    assert store.get("shell").digest == before.digest


def test_overlay_upper_layer_is_capped_by_disk_mb(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image]) -> None:
    spec = SandboxSpec(image="python", limits=ResourceLimits(memory_mb=256, disk_mb=8,
                                                             timeout_s=60))
    code = ("import sys\ntry:\n open('/var/tmp/big','wb').write(b'x'*(32<<20))\n"
            "except OSError as e:\n print('refused', e.errno)\nelse:\n print('wrote')")
    r = mgr.run(["python3", "-c", code], spec, runtime=runtime)
    assert r.stdout_text.startswith("refused 28"), (r.stdout_text, r.stderr_text)  # ENOSPC


def test_readonly_root_is_a_policy_choice(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image]) -> None:
    spec = SandboxSpec(image="python", readonly_root=True, limits=SMALL)
    code = ("try:\n open('/var/tmp/x','w')\nexcept OSError as e:\n print('refused', e.errno)\n"
            "else:\n print('wrote')\nopen('/tmp/ok','w').write('1'); print('tmp ok')")
    r = mgr.run(["python3", "-c", code], spec, runtime=runtime)
    assert r.stdout_text == "refused 30\ntmp ok\n", r.stderr_text  # EROFS; /tmp still works
    assert r.isolation.rootfs == "python:overlay:ro"


def test_policy_tmpfs_mounts_are_sized(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image]) -> None:
    spec = SandboxSpec(image="python", tmpfs={"/scratch": 4}, limits=SMALL)
    code = ("open('/scratch/a','wb').write(b'x'*(1<<20)); print('small ok')\n"
            "try:\n open('/scratch/b','wb').write(b'x'*(8<<20))\n"
            "except OSError as e:\n print('refused', e.errno)")
    r = mgr.run(["python3", "-c", code], spec, runtime=runtime)
    assert r.stdout_text == "small ok\nrefused 28\n", r.stderr_text


@pytest.mark.parametrize(("lang", "code", "expected"), [
    ("python", "import sys; print(sum(range(10)), sys.argv[1:])", "45 ['a']"),
    ("node", "console.log([1,2,3].map(x => x*2).join(','), process.argv.slice(2))",
     "2,4,6 [ 'a' ]"),
    ("bash", 'x=$((6*7)); echo "$x $1"', "42 a"),
])
def test_run_code_writes_the_code_as_a_file_under_the_language_policy(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image], lang: str,
        code: str, expected: str) -> None:
    r = mgr.run_code(lang, code, runtime=runtime, args=["a"])
    assert (r.exit_code, r.stdout_text.strip()) == (0, expected), r.stderr_text
    image = mgr.policies().for_language(lang).spec.image
    assert r.isolation.rootfs == f"{image}:overlay:rw"


def test_code_files_are_read_only(mgr: SandboxManager, runtime: str,
                                  built_images: dict[str, Image]) -> None:
    code = ("import os\ntry:\n open(__file__,'a')\nexcept OSError as e:\n print('ro', e.errno)\n"
            "print(__file__)")
    r = mgr.run_code("python", code, runtime=runtime)
    assert r.stdout_text in ("ro 13\n/code/main.py\n", "ro 30\n/code/main.py\n"), r.stderr_text


def test_a_missing_image_is_refused_before_anything_runs(mgr: SandboxManager) -> None:
    with pytest.raises(ImageNotFound, match="not in the store"):
        mgr.run(["true"], SandboxSpec(image="no-such-image"), runtime="runc")


@pytest.fixture(scope="module")
def imported(built_images: dict[str, Image], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """A real OCI layout made from the shell image's files plus a layer with a whiteout, a
    new file and a symlink, imported into the store; removed afterwards."""
    from closedpaw.sandbox.images.oci import import_image
    from tests.conftest import sandbox_settings
    from tests.oci_support import Entry, layer_tar, oci_layout, tar_tree

    store = ImageStore(sandbox_settings().images)
    top = layer_tar([Entry("usr/bin/.wh.rm"), Entry("hello.txt", data=b"from layer two\n"),
                     Entry("greeting", "symlink", target="/hello.txt")], gz=True)
    layout = oci_layout(tmp_path_factory.mktemp("oci") / "layout",
                        [tar_tree(store.get("shell").rootfs), top], gz=[False, True])
    img = import_image(store, layout, name="test-imported-shell")
    yield img.name
    store.remove(img.name)


def test_an_imported_oci_image_runs_with_its_layers_applied(
        mgr: SandboxManager, runtime: str, imported: str) -> None:
    r = mgr.run(["bash", "-c", "read x < /greeting; echo $x; type -P rm || echo no rm; "
                 "type -P cat"], SandboxSpec(image=imported, limits=SMALL), runtime=runtime)
    assert r.stdout_text == "from layer two\nno rm\n/usr/bin/cat\n", r.stderr_text
    assert r.isolation.rootfs == f"{imported}:overlay:rw"


def test_the_shared_host_skeleton_is_never_written_by_the_runtime(
        mgr: SandboxManager, runtime: str) -> None:
    """Runtimes create a missing working directory or mount point in the root before making
    it read-only; the host image then gets a read-only overlay of its own instead."""
    from closedpaw.sandbox.images.host import prepare_host_rootfs

    skeleton = prepare_host_rootfs(mgr.settings.data_dir).path

    def snap() -> list[tuple[str, int]]:
        return sorted((p.name, p.lstat().st_mtime_ns) for p in [skeleton, *skeleton.iterdir()])

    before = snap()
    code = "import os; open('/scratch/f','w').write('1'); print(os.getcwd())"
    r = mgr.run(["python3", "-c", code],
                SandboxSpec(tmpfs={"/scratch": 4}, workdir="/scratch", limits=SMALL),
                runtime=runtime)
    assert (r.exit_code, r.stdout_text) == (0, "/scratch\n"), r.stderr_text
    assert r.isolation.rootfs == "host:overlay:ro"
    r = mgr.run(["python3", "-c", "import os; print(os.getcwd())"],
                SandboxSpec(workdir="/not/in/the/skeleton", limits=SMALL), runtime=runtime)
    assert (r.exit_code, r.stdout_text) == (0, "/not/in/the/skeleton\n"), r.stderr_text
    r = mgr.run(["true"], SandboxSpec(workdir="/tmp", limits=SMALL), runtime=runtime)
    assert r.exit_code == 0 and r.isolation.rootfs == "host-bind:ro"  # no overlay needed
    r = mgr.run(["true"], SandboxSpec(readonly_root=False, limits=SMALL), runtime=runtime)
    assert r.exit_code == 0 and r.isolation.rootfs == "host:overlay:rw"  # by policy
    assert snap() == before


@pytest.mark.parametrize(("image", "lang", "code", "expected"), [
    ("python", "python", "import sys; print('py', sys.argv[1:])", "py ['a']"),
    ("multi", "node", "console.log('node', process.argv.slice(2))", "node [ 'a' ]"),
    ("shell", "bash", 'echo "bash $1"', "bash a"),
])
def test_long_lived_sandboxes_run_code_as_files(
        mgr: SandboxManager, runtime: str, built_images: dict[str, Image], image: str,
        lang: str, code: str, expected: str) -> None:
    with mgr.create(SandboxSpec(image=image, limits=SMALL), runtime=runtime) as sb:
        for _ in range(2):
            r = sb.code.run(lang, code, args=["a"])
            assert (r.exit_code, r.stdout_text.strip()) == (0, expected), r.stderr_text
