"""A local unprivileged user (uid 65534, the sandboxes' own uid in runc) against the image
store, and imports killed at every step.

* While root imports and removes images again and again, the attacker tries to swap
  directories of the image tree for symbolic links to a victim directory (the race that made
  root's removal delete and chmod files outside the store) and to plant files in an image's
  world-writable directories (its shared lower layer): every attempt fails, nothing outside
  the store changes, no sandbox sees a planted file.
* The removal itself is safe even where the attacker can reach the tree: it is entirely
  descriptor-relative, so a swapped directory stops it instead of redirecting it.
* SIGKILL at each step of an import leaves a staging dir or an orphan root; ``closedpaw gc``,
  the next import and ``image rm`` remove them, never while their owner lives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.errors import ImageError
from closedpaw.sandbox import SandboxManager
from closedpaw.sandbox.images.oci import import_image
from closedpaw.sandbox.images.store import ImageStore, gc_staging, remove_tree
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from tests.oci_support import Entry, layer_tar, oci_layout, tar_tree

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

# The attacker: for `seconds`, rename each target directory away and put a symlink to the
# victim in its place; plant files in world-writable directories. Prints its counts.
ATTACKER = r"""
import json, os, sys, time
targets0, plants0, victim, seconds, image_dir = json.loads(sys.argv[1])
won, refused, planted = 0, 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    targets, plants = targets0, plants0
    if image_dir:   # every root the store holds now: "{root}" in a target stands for it
        try:
            roots = [os.path.join(image_dir, r) for r in os.listdir(image_dir)
                     if r.startswith("rootfs-")]
        except OSError:
            roots = []
        targets = [t.replace("{root}", r) for r in roots for t in targets0]
        plants = [t.replace("{root}", r) for r in roots for t in plants0]
    for t in targets:
        try:
            os.rename(t, t + ".moved")
            os.symlink(victim, t)
            won += 1
        except OSError:
            refused += 1
    for p in plants:
        try:
            with open(os.path.join(p, "planted"), "x") as f:
                f.write("planted by nobody")
            planted += 1
        except OSError:
            refused += 1
print(json.dumps({"won": won, "refused": refused, "planted": planted}))
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse, as /var/lib is: the attacker can reach the
    store directory itself (only the store's own modes keep it out)."""
    if os.geteuid() != 0:
        pytest.fail("these attacks need root (to drop to uid 65534): run 'make test' as root",
                    pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="closedpaw-attack-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for p in d.rglob("*"):   # the attacker's leftovers may sit in read-only dirs
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o700)
        shutil.rmtree(d)


def victim(base: Path) -> tuple[Path, dict[str, object]]:
    v = base / "victim"
    v.mkdir(mode=0o755)
    (v / "precious").write_text("root's file\n")
    os.chmod(v, 0o755)
    return v, snapshot(v)


def snapshot(v: Path) -> dict[str, object]:
    return {"mode": oct(os.stat(v).st_mode), "files": sorted(os.listdir(v)),
            "precious": (v / "precious").read_text()}


def start_attacker(targets: list[Path], plants: list[Path], v: Path, seconds: float,
                   image_dir: Path | None = None) -> subprocess.Popen[str]:
    arg = json.dumps([[str(t) for t in targets], [str(p) for p in plants], str(v), seconds,
                      str(image_dir) if image_dir else ""])
    return subprocess.Popen([*NOBODY, sys.executable, "-c", ATTACKER, arg],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def attacker_result(p: subprocess.Popen[str]) -> dict[str, int]:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    result: dict[str, int] = json.loads(out)
    return result


def writable_image(base: Path) -> Path:
    """A layout whose tree has world-writable dirs (as Debian's /tmp, /var/tmp, /run/lock)
    and enough files that removing it takes a while."""
    entries = [Entry("tmp", "dir", mode=0o1777), Entry("var", "dir", mode=0o755),
               Entry("var/tmp", "dir", mode=0o1777), Entry("run", "dir", mode=0o755),
               Entry("run/lock", "dir", mode=0o1777)]
    for i in range(20):
        entries.append(Entry(f"data{i}", "dir", mode=0o777))
        entries += [Entry(f"data{i}/f{j}", data=b"x" * 100) for j in range(50)]
    return oci_layout(base / "layout", [layer_tar(entries)])


def test_rm_and_reimport_race_by_another_user_changes_nothing_outside(
        public_dir: Path) -> None:
    store = ImageStore(public_dir / "images")
    layout = writable_image(public_dir)
    v, before = victim(public_dir)
    img = import_image(store, layout, name="race")
    assert oct(os.stat(store.root).st_mode & 0o777) == "0o755"       # listable
    assert oct(os.stat(img.rootfs).st_mode & 0o777) == "0o700"       # not enterable
    # Everything the attacker would swap or plant in, in whatever root the store holds (it
    # learns their names from the listable image directory).
    names = ["tmp", "var/tmp", "run/lock", *[f"data{i}" for i in range(20)]]
    attacker = start_attacker([Path("{root}") / n for n in names],
                              [Path("{root}") / n for n in ("tmp", "var/tmp", "run/lock")],
                              v, 600, image_dir=store.root / "race")
    try:
        for i in range(12):
            img = import_image(store, layout, name="race")
            store.remove("race")
            assert not (store.root / "race").exists(), f"round {i}"
    finally:
        attacker.send_signal(signal.SIGTERM)
        attacker.communicate(timeout=30)
    assert snapshot(v) == before, "a file or mode outside the store changed"
    assert sorted(os.listdir(store.root)) == [".lock"]


def test_the_attacker_is_refused_in_the_live_tree(public_dir: Path) -> None:
    """Same attacker, pointed at the installed image's real paths for a few seconds."""
    store = ImageStore(public_dir / "images")
    img = import_image(store, writable_image(public_dir), name="live")
    v, before = victim(public_dir)
    names = ["tmp", "var/tmp", "run/lock", *[f"data{i}" for i in range(20)]]
    res = attacker_result(start_attacker([img.rootfs / n for n in names],
                                         [img.rootfs / n for n in ("tmp", "var/tmp")], v, 3))
    assert res["won"] == 0 and res["planted"] == 0 and res["refused"] > 100, res
    assert store.verify("live")
    assert not list(img.rootfs.rglob("planted"))
    store.remove("live")
    assert snapshot(v) == before


def test_removal_is_not_redirected_even_where_the_attacker_reaches(public_dir: Path) -> None:
    """Defence in depth: trees the attacker CAN write (world-writable dirs in a public
    place) are removed while it swaps directories for links to the victim, many times."""
    v, before = victim(public_dir)
    trees = public_dir / "trees"
    trees.mkdir(mode=0o755)
    rounds, won = 20, 0
    for r in range(rounds):
        t = trees / f"t{r}"
        for i in range(15):
            d = t / f"d{i}" / "sub"
            d.mkdir(parents=True)
            for j in range(40):
                (d / f"f{j}").write_bytes(b"x")
        for p in [t, *t.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o777)
        targets = [t / f"d{i}" for i in range(15)] + [t / f"d{i}" / "sub" for i in range(15)]
        attacker = start_attacker(targets, [], v, 0.5)
        time.sleep(0.05)
        with contextlib.suppress(ImageError, OSError):
            remove_tree(t)        # a swapped directory stops the removal: nothing followed
        won += attacker_result(attacker)["won"]
    assert won > 0, "the attacker never swapped a directory: the test proved nothing"
    assert snapshot(v) == before, "the removal followed a link out of the tree"


def test_a_planted_file_never_reaches_a_sandbox(mgr: SandboxManager, runtime: str,
                                                tmp_path: Path) -> None:
    """A runnable image with world-writable /tmp and /var/tmp; uid 65534 tries to plant in
    its lower layer; the sandbox (runc and runsc) sees no planted file and can still write
    its own /tmp and /var/tmp (through its overlay and tmpfs, not through the image)."""
    tree = tmp_path / "tree"
    for f in ("/bin/dash", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        dst = tree / f.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dst)
    for d in ("tmp", "var/tmp"):
        (tree / d).mkdir(parents=True)
        os.chmod(tree / d, 0o1777)
    store = ImageStore(mgr.settings.images)
    name = f"plant-{os.getpid()}-{runtime}"
    img = import_image(store, oci_layout(tmp_path / "layout", [tar_tree(tree)]), name=name)
    try:
        p = subprocess.run([*NOBODY, "/bin/sh", "-c",
                            f"echo x > {img.rootfs}/var/tmp/planted; "
                            f"echo x > {img.rootfs}/tmp/planted; "
                            f"echo x > {store.root}/{name}/planted"],
                           capture_output=True, text=True, check=False)
        assert p.stderr.count("Permission denied") == 3, p.stderr
        r = mgr.run(["/bin/dash", "-c", "for f in /var/tmp/planted /tmp/planted; do "
                     "[ -e $f ] && echo PLANTED $f; done; echo a > /tmp/a && echo b > "
                     "/var/tmp/b && echo writable"], SandboxSpec(
                         image=name, limits=ResourceLimits(memory_mb=128, disk_mb=16,
                                                           timeout_s=30)), runtime=runtime)
        assert (r.exit_code, r.stdout_text) == (0, "writable\n"), r.stderr_text
        assert store.verify(name)
    finally:
        mgr.reaper.drain()
        store.remove(name)


# -- SIGKILL at every step, then gc ------------------------------------------------------------
KILLER = r"""
import os, signal, sys, time
from pathlib import Path
from closedpaw.sandbox.images.oci import import_image
from closedpaw.sandbox.images.store import ImageStore
store, layout, at = sys.argv[1:4]
def progress(step):
    if step == at:
        if sys.argv[4:] == ["pause"]:
            print("paused", flush=True)
            time.sleep(120)
        os.kill(os.getpid(), signal.SIGKILL)
import_image(ImageStore(Path(store)), layout, name="k", progress=progress)
"""
STEPS = ("staging", "layer", "unpack", "digest", "rename", "manifest")


def killed_import(store: ImageStore, layout: Path, at: str) -> None:
    p = subprocess.run([sys.executable, "-c", KILLER, str(store.root), str(layout), at],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr


def leftovers(store: ImageStore) -> list[str]:
    """What is in the store beyond the lock and installed images (manifest + its root)."""
    out = []
    for p in sorted(store.root.iterdir()):
        if p.name == ".lock":
            continue
        if not p.is_dir() or p.name.startswith("."):
            out.append(p.name)
            continue
        try:
            keep = store.get(p.name).rootfs.name
        except ImageError:
            keep = None
        out += [f"{p.name}/{c.name}" for c in p.iterdir() if c.name not in ("manifest.json",
                                                                            keep)]
    return out


@pytest.fixture
def killable(tmp_path: Path) -> tuple[ImageStore, Path]:
    if os.geteuid() != 0:
        pytest.fail("import needs root: run 'make test' as root", pytrace=False)
    layers = [layer_tar([Entry("a", data=b"a" * 10_000), Entry("d", "dir", mode=0o755),
                         Entry("d/b", data=b"b")], gz=True),
              layer_tar([Entry("c", data=b"c")])]
    return ImageStore(tmp_path / "images"), oci_layout(tmp_path / "layout", layers,
                                                       gz=[True, False])


@pytest.mark.parametrize("at", STEPS)
def test_sigkill_at_each_step_then_gc(killable: tuple[ImageStore, Path], at: str) -> None:
    store, layout = killable
    killed_import(store, layout, at)
    left = leftovers(store)
    assert left, f"killed at {at}: nothing left to collect?"
    if at == "rename":
        assert any(x.startswith("k/rootfs-") for x in left), left   # the orphan root
    report = gc_staging(store.root)
    assert report and all("removed" in line for line in report), report
    assert leftovers(store) == []
    if at == "manifest":
        assert store.verify("k")           # the install had completed: it stays
    else:
        assert store.list() == []


def test_gc_through_the_cli(killable: tuple[ImageStore, Path], tmp_path: Path) -> None:
    store, layout = killable
    for at in ("layer", "rename"):
        killed_import(store, layout, at)
    assert leftovers(store)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_DATA_DIR": str(tmp_path),
           "CLOSEDPAW_STATE_DIR": str(tmp_path / "state"),
           "CLOSEDPAW_CGROUP_PARENT": f"closedpaw-gc-images-{os.getpid()}"}
    p = subprocess.run([str(Path(sys.executable).with_name("closedpaw")), "gc", "--json"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    details = json.loads(p.stdout)["details"]
    assert any("staging dir" in d for d in details), details
    assert leftovers(store) == []


def test_the_next_import_and_rm_collect_leftovers(killable: tuple[ImageStore, Path]) -> None:
    store, layout = killable
    killed_import(store, layout, "unpack")
    killed_import(store, layout, "rename")
    import_image(store, layout, name="other")
    assert leftovers(store) == []
    killed_import(store, layout, "rename")     # no manifest for k: rm still cleans it
    store.remove("k")
    assert leftovers(store) == [] and [i.name for i in store.list()] == ["other"]


def test_a_living_import_is_never_collected(killable: tuple[ImageStore, Path]) -> None:
    store, layout = killable
    p = subprocess.Popen([sys.executable, "-c", KILLER, str(store.root), str(layout), "layer",
                          "pause"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "paused\n"
        staging = [x for x in os.listdir(store.root) if x.startswith(".tmp-k-")]
        assert len(staging) == 1
        assert gc_staging(store.root) == []
        import_image(store, layout, name="other")   # the next import leaves it alone too
        assert (store.root / staging[0]).is_dir()
    finally:
        p.kill()
        p.communicate()
    assert any("removed" in line for line in gc_staging(store.root))
    assert leftovers(store) == []
