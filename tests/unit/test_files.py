"""/output collection never follows links out of the destination; /input staging copies
links as links."""

import os
from pathlib import Path

import pytest

from closedpaw.errors import FileTransferError
from closedpaw.sandbox.host.files import collect_output, stage_input


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


def test_links_already_in_the_destination_are_replaced_not_followed(tmp_path: Path) -> None:
    src, dest, victim = tmp_path / "src", tmp_path / "dest", tmp_path / "victim"
    (src / "sub").mkdir(parents=True)
    (src / "x").write_text("from sandbox")
    (src / "sub/y").write_text("y")
    victim.mkdir()
    (victim / "x").write_text("precious")
    dest.mkdir()
    os.symlink(victim / "x", dest / "x")       # file link -> replaced by a regular file
    os.symlink(victim, dest / "sub")           # dir link -> refused, not entered
    copied, skipped = collect_output(src, dest)
    assert (victim / "x").read_text() == "precious"
    assert not (victim / "y").exists()
    assert not os.path.islink(dest / "x") and (dest / "x").read_text() == "from sandbox"
    assert copied == ["x"]
    assert [s.path for s in skipped] == ["sub/"]


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
