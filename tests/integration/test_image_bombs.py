"""Import bombs, each run in a subprocess whose wall time and peak memory (ru_maxrss) are
measured: every one ends (refused, or imported quickly when it is harmless, as hard links
are) within generous bounds, leaves nothing in the store, and the store lock stays free for
other work while an import unpacks. Inputs are kilobytes to a few MB; without the limits they
ran for ever (negative tar size, CVE-2025-8194), took gigabytes of memory (huge PAX headers,
millions of headers) or wrote gigabytes (gzip bomb, sparse members)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from closedpaw.sandbox.images.store import ImageStore
from tests.image_craft import (
    dir_entry,
    file_entry,
    gnu_sparse_tar,
    gzip_zeros_layer,
    huge_extended_header_tar,
    negative_size_tar,
    tar_of,
)
from tests.oci_support import oci_layout

MAX_RSS_MB = 200        # python + closedpaw is ~40 MB; a 2 GiB header would be 2000+
# (peak RSS is the child's VmHWM: ru_maxrss survives exec and would report the parent's)
MAX_WALL_S = 90         # 2 shared cores; the endless cases never end at all

CHILD = r"""
import json, sys, time
from pathlib import Path
from closedpaw.errors import ClosedPawError
from closedpaw.sandbox.images.limits import ImportLimits
from closedpaw.sandbox.images.oci import import_image
from closedpaw.sandbox.images.store import ImageStore
store, path, limits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.monotonic()
try:
    img = import_image(ImageStore(Path(store)), path, name="bomb", limits=ImportLimits(**limits))
    out = {"ok": True, "size": img.size}
except ClosedPawError as e:
    out = {"ok": False, "error": str(e), "type": type(e).__name__}
# VmHWM: this program's own peak (ru_maxrss would include the forking parent's).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
out["rss_mb"] = int(hwm.split()[1]) / 1024
out["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    if os.geteuid() != 0:
        pytest.fail("image import keeps file owners and needs root: run 'make test' as root",
                    pytrace=False)
    return ImageStore(tmp_path / "images")


def run_import(store: ImageStore, path: Path, limits: dict[str, Any] | None = None,
               watch_lock: bool = False) -> dict[str, Any]:
    """Import in a child; with ``watch_lock``, also prove the store lock can be taken while
    the child's staging dir exists (it is unpacking)."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(store.root), str(path),
                          json.dumps(limits or {})], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lock_taken_while_unpacking = 0
    try:
        while p.poll() is None:
            if time.monotonic() - t0 > MAX_WALL_S:
                raise AssertionError(f"{path.name}: the import ran over {MAX_WALL_S} s")
            if watch_lock and _staging(store):
                fd = os.open(store.root / ".lock", os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _staging(store):
                        lock_taken_while_unpacking += 1
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)
            time.sleep(0.02)
        out, err = p.communicate()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and out, f"child failed: {err[-2000:]}"
    res: dict[str, Any] = json.loads(out)
    res["lock_taken"] = lock_taken_while_unpacking
    assert res["rss_mb"] < MAX_RSS_MB, res
    assert "Traceback" not in err, err
    if not res["ok"]:
        assert "\n" not in res["error"], res
        left = sorted(x.name for x in store.root.iterdir()) if store.root.exists() else []
        assert left in ([], [".lock"]), f"left behind: {left}"
    return res


def _staging(store: ImageStore) -> bool:
    try:
        return any(n.startswith(".tmp-bomb-") for n in os.listdir(store.root))
    except FileNotFoundError:
        return False


def outer_tar(path: Path, first: bytes) -> Path:
    path.write_bytes(first)
    return path


# -- the outer archive ---------------------------------------------------------------------
@pytest.mark.parametrize(("make", "match"), [
    (negative_size_tar, "negative size"),
    (lambda: huge_extended_header_tar(tarfile.XHDTYPE), "extended tar header"),
    (lambda: huge_extended_header_tar(tarfile.GNUTYPE_LONGNAME), "extended tar header"),
    (gnu_sparse_tar, "sparse files"),
], ids=["negative-size", "pax-2GiB", "longname-2GiB", "sparse"])
def test_outer_archive_bombs(store: ImageStore, tmp_path: Path, make: Any,
                             match: str) -> None:
    res = run_import(store, outer_tar(tmp_path / "image.tar", make()))
    assert not res["ok"] and match in res["error"], res


def test_millions_of_archive_headers_stop_at_the_limit(store: ImageStore,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "many.tar"
    with tarfile.open(path, "w") as t:
        for i in range(30_000):
            t.addfile(tarfile.TarInfo(f"x{i}"), io.BytesIO(b""))
    res = run_import(store, path, {"max_archive_members": 10_000})
    assert not res["ok"] and "more than 10000 members" in res["error"], res


# -- layers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "match"), [
    (negative_size_tar, "negative size"),
    (lambda: huge_extended_header_tar(tarfile.XHDTYPE), "extended tar header"),
    (lambda: huge_extended_header_tar(tarfile.GNUTYPE_LONGLINK), "extended tar header"),
    (gnu_sparse_tar, "sparse files"),
], ids=["negative-size", "pax-2GiB", "longlink-2GiB", "sparse"])
def test_layer_header_bombs(store: ImageStore, tmp_path: Path, make: Any, match: str) -> None:
    res = run_import(store, oci_layout(tmp_path / "l", [make()]))
    assert not res["ok"] and match in res["error"], res


def test_a_gzip_bomb_is_cut_at_the_limit_with_the_store_lock_free(store: ImageStore,
                                                                   tmp_path: Path) -> None:
    layer = gzip_zeros_layer("zeros", 1 << 30, files=256)   # 1 GiB of zeros in ~1 MB
    assert len(layer) < 2 << 20
    res = run_import(store, oci_layout(tmp_path / "l", [layer], gz=[True]),
                     {"max_unpacked_bytes": 256 << 20}, watch_lock=True)
    assert not res["ok"] and "unpacks to more than 268435456 bytes" in res["error"], res
    assert res["lock_taken"] > 0, "the store lock was held while the layer unpacked"


def test_many_layer_members_stop_at_the_limit(store: ImageStore, tmp_path: Path) -> None:
    layer = tar_of([(file_entry(f"f{i}"), b"") for i in range(60_000)])
    res = run_import(store, oci_layout(tmp_path / "l", [layer]), {"max_members": 20_000})
    assert not res["ok"] and "more than 20000 members" in res["error"], res


def test_a_1200_deep_tree_is_refused_whole(store: ImageStore, tmp_path: Path) -> None:
    layer = tar_of([(dir_entry("/".join(["d"] * n)), None) for n in range(1, 1201)])
    res = run_import(store, oci_layout(tmp_path / "l", [layer]))
    assert not res["ok"] and "directories deep, more than 128" in res["error"], res


def test_deep_json_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [tar_of([(file_entry("f"), b"")])])
    (layout / "index.json").write_text("[" * 1_000_000 + "]" * 1_000_000)
    res = run_import(store, layout)
    assert not res["ok"] and "nested too deeply" in res["error"], res


def test_opaque_whiteouts_do_not_go_quadratic(store: ImageStore, tmp_path: Path) -> None:
    n = 10_000
    lower = tar_of([(dir_entry("d"), None), *[(file_entry(f"d/old{i}"), b"")
                                              for i in range(n)]])
    upper = tar_of([(dir_entry("d"), None), *[m for i in range(n) for m in (
        (file_entry(f"d/new{i}"), b""), (file_entry("d/.wh..wh..opq"), b""))]])
    res = run_import(store, oci_layout(tmp_path / "l", [lower, upper]), watch_lock=True)
    assert res["ok"], res
    assert len(os.listdir(store.get("bomb").rootfs / "d")) == n
    assert res["seconds"] < 60, res      # it was over 2 minutes, with the lock held


def test_a_file_hard_linked_1000_times_is_written_and_hashed_once(store: ImageStore,
                                                                  tmp_path: Path) -> None:
    data = os.urandom(32 << 20)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(file_entry("big", len(data)),
                                                            data)]
    for i in range(1000):
        ti = tarfile.TarInfo(f"l{i}")
        ti.type, ti.linkname = tarfile.LNKTYPE, "big"
        members.append((ti, None))
    res = run_import(store, oci_layout(tmp_path / "l", [tar_of(members)]),
                     {"max_unpacked_bytes": 64 << 20})
    assert res["ok"], res
    assert res["size"] >= 1001 * len(data)   # the size reported counts every name
    assert res["seconds"] < 60, res          # hashing 32 GiB took minutes
