"""The filesystem skill against path attacks, on both resolvers: openat2(RESOLVE_BENEATH) and
the O_NOFOLLOW walk used where the kernel lacks it."""

from __future__ import annotations

import base64
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from closedpaw.errors import InvalidRequest, PathRefused
from closedpaw.skills.builtin.fs import FileSystemSkill, has_openat2

SECRET = "TOPSECRET-OUTSIDE"


@pytest.fixture(params=["openat2", "walk"])
def fs_env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FileSystemSkill, Path,
                                                                     list[Any]]:
    if request.param == "openat2":
        assert has_openat2(), f"this kernel ({os.uname().release}) lacks openat2"
    root = tmp_path / "root"
    root.mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("hello world\nsecond line\n")
    (root / "Makefile").write_text("all:\n\techo hello\n")   # no extension
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (tmp_path / "root2").mkdir()   # a sibling whose name starts like the root
    (tmp_path / "root2" / "x").write_text(SECRET)
    log: list[Any] = []
    fs = FileSystemSkill([root], max_bytes=4096, max_entries=50,
                         audit=lambda op, d: log.append((op, d)),
                         use_openat2=request.param == "openat2")
    return fs, root, log


def test_reads_lists_writes_and_searches_beneath_the_root(fs_env: Any) -> None:
    fs, root, log = fs_env
    r = fs.call({"op": "read", "path": f"{root}/docs/a.txt"})
    assert r["content"].startswith("hello world") and not r["binary"]
    assert fs.call({"op": "read", "path": f"{root}/Makefile"})["content"].startswith("all:")
    names = [e["name"] for e in fs.call({"op": "list", "path": str(root)})["entries"]]
    assert names == ["Makefile", "docs"]
    fs.call({"op": "write", "path": f"{root}/docs/new", "content": "fresh hello"})
    assert (root / "docs" / "new").read_text() == "fresh hello"
    hits = fs.call({"op": "search", "path": str(root), "pattern": "hello"})["matches"]
    assert {(h["path"], h["line"]) for h in hits} == {
        (f"{root}/docs/a.txt", 1), (f"{root}/Makefile", 2), (f"{root}/docs/new", 1)}
    assert [op for op, _ in log] == ["read", "read", "list", "write", "search"]
    assert all(d["outcome"] == "ok" for _, d in log)


@pytest.mark.parametrize("path", [
    "{root}/../outside/secret", "{root}/docs/../../outside/secret", "{tmp}/outside/secret",
    "{tmp}/root2/x", "/etc/passwd", "{root}/%2e%2e/outside/secret",
    "{root}/..%2fouside/secret", "docs/a.txt", "{root}/docs\0/a.txt",
])
def test_traversal_is_refused_and_audited(fs_env: Any, path: str) -> None:
    fs, root, log = fs_env
    p = path.format(root=root, tmp=root.parent)
    with pytest.raises(PathRefused):
        fs.call({"op": "read", "path": p})
    assert log[-1][0] == "read" and log[-1][1]["outcome"] == "refused"


def test_symlink_escapes_are_refused(fs_env: Any) -> None:
    fs, root, _ = fs_env
    outside = root.parent / "outside"
    (root / "link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside)
    (root / "rel").symlink_to("../outside/secret")
    (root / "inner").symlink_to("docs/a.txt")   # even one that stays inside: no links
    for p in ("link", "dirlink/secret", "rel", "inner"):
        with pytest.raises(PathRefused, match=r"link|outside|component"):
            fs.call({"op": "read", "path": f"{root}/{p}"})
    with pytest.raises(PathRefused):
        fs.call({"op": "list", "path": f"{root}/dirlink"})
    with pytest.raises(PathRefused):
        fs.call({"op": "write", "path": f"{root}/dirlink/secret", "content": "owned"})
    # writing to a link's name replaces the link, never the file it points at
    fs.call({"op": "write", "path": f"{root}/link", "content": "replaced"})
    assert (outside / "secret").read_text() == SECRET
    assert not (root / "link").is_symlink() and (root / "link").read_text() == "replaced"
    hits = fs.call({"op": "search", "path": str(root), "pattern": "TOPSECRET"})["matches"]
    assert hits == []


def test_hard_link_escape_is_refused(fs_env: Any) -> None:
    fs, root, _ = fs_env
    os.link(root.parent / "outside" / "secret", root / "alias")
    with pytest.raises(PathRefused, match=r"hard links"):
        fs.call({"op": "read", "path": f"{root}/alias"})
    assert fs.call({"op": "search", "path": str(root), "pattern": "TOPSECRET"})["matches"] == []
    fs.call({"op": "write", "path": f"{root}/alias", "content": "new"})
    assert (root.parent / "outside" / "secret").read_text() == SECRET


def test_a_symlink_swapped_in_between_check_and_use_never_leaks(fs_env: Any) -> None:
    fs, root, _ = fs_env
    d = root / "swap"
    (root / "real").mkdir()
    (root / "real" / "secret").write_text("inside")
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            tmp = root / "swap.tmp"
            with _quiet():
                os.symlink(root.parent / "outside", tmp)
                os.replace(tmp, d)
            with _quiet():
                os.unlink(d)
                os.symlink("real", tmp)   # inside, but still a link: refused too
                os.replace(tmp, d)
            with _quiet():
                os.unlink(d)
                os.rename(root / "real", d)
                os.rename(d, root / "real")
    t = threading.Thread(target=swapper)
    t.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 2.0
        n = 0
        while time.monotonic() < deadline or n < 300:
            n += 1
            try:
                seen.add(fs.call({"op": "read", "path": f"{d}/secret"})["content"])
            except PathRefused:
                seen.add("refused")
    finally:
        stop.set()
        t.join()
    assert SECRET not in seen
    assert "refused" in seen


def test_huge_files_are_truncated_and_binary_files_detected(fs_env: Any) -> None:
    fs, root, _ = fs_env
    with open(root / "huge", "wb") as f:
        f.truncate(20 * 1024**3)   # 20 GiB, sparse
        f.seek(0)
        f.write(b"start")
    t0 = time.monotonic()
    r = fs.call({"op": "read", "path": f"{root}/huge"})
    assert r["truncated"] and r["bytes"] == 4096 and r["size"] == 20 * 1024**3
    assert time.monotonic() - t0 < 5
    assert r["binary"]   # NUL bytes
    (root / "img").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    r = fs.call({"op": "read", "path": f"{root}/img"})
    assert r["binary"] and base64.b64decode(r["content_base64"]).startswith(b"\x89PNG")
    with pytest.raises(PathRefused, match=r"over the limit"):
        fs.call({"op": "write", "path": f"{root}/big", "content": "x" * 5000})
    assert not (root / "big").exists()


def test_fifos_and_devices_are_refused_without_blocking(fs_env: Any) -> None:
    fs, root, _ = fs_env
    os.mkfifo(root / "fifo")
    os.mknod(root / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    for name in ("fifo", "zero"):
        with pytest.raises(PathRefused, match=r"not a regular file"):
            fs.call({"op": "read", "path": f"{root}/{name}"})
    hits = fs.call({"op": "search", "path": str(root), "pattern": "x"})
    assert hits["matches"] == []
    # writing to a FIFO's name replaces it (no reader needed, nothing blocks)
    fs.call({"op": "write", "path": f"{root}/fifo", "content": "data"})
    assert (root / "fifo").read_text() == "data"


def test_count_limits_and_bad_arguments(fs_env: Any) -> None:
    fs, root, _ = fs_env
    for i in range(80):
        (root / f"f{i:03}").write_text("hello")
    assert fs.call({"op": "list", "path": str(root)})["truncated"]
    assert fs.call({"op": "search", "path": str(root), "pattern": "hello"})["truncated"]
    with pytest.raises(InvalidRequest):
        fs.call({"op": "delete", "path": str(root)})
    with pytest.raises(PathRefused, match=r"no roots"):
        FileSystemSkill([]).call({"op": "read", "path": "/tmp/x"})


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True
