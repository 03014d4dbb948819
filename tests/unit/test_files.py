"""/output collection never follows links out of the destination; /input staging copies
links as links."""

import os
import threading
import time
from pathlib import Path

import pytest

from closedpaw.errors import FileTransferError
from closedpaw.sandbox.host.files import collect_output, stage_input

MIB = 1 << 20


def test_regular_files_and_dirs_are_copied(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "a/b").mkdir(parents=True)
    (src / "a/b/f.txt").write_text("hi")
    (src / "top").write_bytes(b"\0" * 10)
    copied, skipped = collect_output(src, dest)
    assert sorted(copied) == ["a/b/f.txt", "top"] and skipped == []
    assert (dest / "a/b/f.txt").read_text() == "hi"


def test_links_from_the_sandbox_are_not_copied(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    os.symlink("/etc/passwd", src / "passwd")
    os.symlink("/root", src / "rootdir")
    os.mkfifo(src / "fifo")
    copied, skipped = collect_output(src, dest)
    assert copied == []
    assert {s.path for s in skipped} == {"passwd", "rootdir", "fifo"}
    assert not os.path.lexists(dest / "passwd")


def test_existing_entries_are_kept_and_reported_unless_overwrite(tmp_path: Path) -> None:
    src, dest, victim = tmp_path / "src", tmp_path / "dest", tmp_path / "victim"
    (src / "sub").mkdir(parents=True)
    (src / "x").write_text("from sandbox")
    (src / "Makefile").write_text("evil:\n")
    (src / "sub/y").write_text("y")
    victim.mkdir()
    (victim / "x").write_text("precious")
    dest.mkdir()
    (dest / "Makefile").write_text("all:\n")
    os.symlink(victim / "x", dest / "x")       # a file link: kept, never written through
    os.symlink(victim, dest / "sub")           # a dir link: kept, not entered
    copied, skipped = collect_output(src, dest)
    assert copied == []
    assert {s.path for s in skipped} == {"Makefile", "x", "sub/"}
    assert all("exists on the host" in s.reason for s in skipped), skipped
    assert (dest / "Makefile").read_text() == "all:\n"
    assert os.readlink(dest / "x") == str(victim / "x")
    assert (victim / "x").read_text() == "precious" and not (victim / "y").exists()
    assert sorted(os.listdir(dest)) == ["Makefile", "sub", "x"]   # no temporary file left

    copied, skipped = collect_output(src, dest, overwrite=True)
    assert sorted(copied) == ["Makefile", "x"]
    assert [s.path for s in skipped] == ["sub/"]                 # a link is never entered
    assert (dest / "Makefile").read_text() == "evil:\n"
    assert not os.path.islink(dest / "x") and (dest / "x").read_text() == "from sandbox"
    assert (victim / "x").read_text() == "precious" and not (victim / "y").exists()


def test_overwrite_merges_into_real_directories_but_never_replaces_one(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "d").mkdir(parents=True)
    (src / "d/new").write_text("n")
    (src / "isdir").write_text("a file where the host has a directory")
    (dest / "d").mkdir(parents=True)
    (dest / "d/old").write_text("o")
    (dest / "isdir").mkdir()
    copied, skipped = collect_output(src, dest)
    assert copied == [] and {s.path for s in skipped} == {"d/", "isdir"}
    copied, skipped = collect_output(src, dest, overwrite=True)
    assert copied == ["d/new"]
    assert [(s.path, s.reason) for s in skipped] == [("isdir", "destination is a directory")]
    assert sorted(os.listdir(dest / "d")) == ["new", "old"] and (dest / "isdir").is_dir()


def _sparse(path: Path, size: int, data: bytes = b"", at: int = 0) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        if data:
            f.seek(at)
            f.write(data)


def _stored(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_sparse_file_larger_than_the_cap_is_refused_not_expanded(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _sparse(src / "3g", 3 << 30, b"x", 1 << 30)
    _sparse(src / "huge", 8 << 40)         # 8 TiB of holes (the /output tmpfs allows 8 EiB)
    (src / "fine").write_text("ok")
    copied, skipped = collect_output(src, dest, max_bytes=64 * MIB)
    assert copied == ["fine"]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {"3g", "huge"}
    assert all("exceeds the output cap" in r and "sparse" in r for r in reasons.values())
    assert sorted(os.listdir(dest)) == ["fine"]


def test_holes_below_the_cap_stay_holes(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _sparse(src / "s", 32 * MIB, b"head", 0)
    with open(src / "s", "r+b") as f:
        f.seek(20 * MIB)
        f.write(b"middle")
    copied, _ = collect_output(src, dest, max_bytes=64 * MIB)
    assert copied == ["s"]
    assert (dest / "s").read_bytes() == (src / "s").read_bytes()
    assert _stored(dest / "s") <= 1 * MIB, _stored(dest / "s")   # not 32 MiB of zeros


def test_hard_links_are_copied_once(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a").write_bytes(b"z" * MIB)
    for i in range(31):
        os.link(src / "a", src / f"link{i:02}")
    copied, skipped = collect_output(src, dest, max_bytes=64 * MIB)
    assert copied == ["a"]
    assert len(skipped) == 31 and all(s.reason == "hard link to a (copied once)"
                                      for s in skipped)
    assert sum(_stored(p) for p in dest.iterdir()) <= 2 * MIB


def test_the_byte_budget_bounds_the_whole_copy(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(bytes([65 + i]) * MIB)
    copied, skipped = collect_output(src, dest, max_bytes=3 * MIB)
    assert copied == ["f0", "f1", "f2"]
    assert [s.path for s in skipped] == ["f3", "f4"]
    assert all("output cap" in s.reason for s in skipped)


def test_the_copy_stops_at_its_deadline(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a").write_text("a")
    copied, skipped = collect_output(src, dest, deadline=time.monotonic() - 1)
    assert copied == [] and [s.path for s in skipped] == ["a"]
    assert "deadline" in skipped[0].reason and os.listdir(dest) == []


def test_a_file_growing_during_the_copy_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "grow").write_bytes(b"g" * (4 * MIB))
    stop = threading.Event()

    def grow() -> None:
        with open(src / "grow", "ab") as f:
            while not stop.is_set():
                f.write(b"g" * 65536)
                f.flush()

    t = threading.Thread(target=grow)
    t.start()
    try:
        results = [collect_output(src, tmp_path / f"d{i}", max_bytes=8 * MIB)
                   for i in range(5)]
    finally:
        stop.set()
        t.join()
    for i, (copied, skipped) in enumerate(results):
        size = sum(p.stat().st_size for p in (tmp_path / f"d{i}").iterdir())
        assert size <= 8 * MIB
        assert copied == ["grow"] or (skipped and skipped[0].path == "grow"), (copied, skipped)
        assert all(n == "grow" for n in os.listdir(tmp_path / f"d{i}"))


def test_missing_source_copies_nothing(tmp_path: Path) -> None:
    assert collect_output(tmp_path / "none", tmp_path / "d") == ([], [])


def test_stage_input_copies_links_as_links_and_makes_files_readable(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "f").write_text("x")
    os.chmod(src / "f", 0o600)
    os.symlink("/etc/shadow", src / "l")
    stage_input(src, tmp_path / "staged")
    assert os.readlink(tmp_path / "staged/l") == "/etc/shadow"
    assert os.stat(tmp_path / "staged/f").st_mode & 0o777 == 0o644
    one = tmp_path / "one.txt"
    one.write_text("1")
    stage_input(one, tmp_path / "staged1")
    assert (tmp_path / "staged1/one.txt").read_text() == "1"


def test_stage_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match="does not exist"):
        stage_input(tmp_path / "nope", tmp_path / "s")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileTransferError, match="not a regular file"):
        stage_input(tmp_path / "fifo", tmp_path / "s2")
