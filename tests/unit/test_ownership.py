"""Sandbox ownership by flock: a living owner (or a child it forked) keeps its state dir; a
dead owner's dir can be taken over; a dir still being created is left alone."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from closedpaw.sandbox.host import ownership


def _hold_in_child(path: Path) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the owner: claim, say so, wait to be killed
        try:
            os.close(r)
            ownership.claim(path)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def test_live_owner_is_respected_and_dead_owner_is_taken_over(tmp_path: Path) -> None:
    d = tmp_path / "sandboxes" / "cp-000000000001"
    pid = _hold_in_child(d)
    try:
        assert d.is_dir() and (d / ownership.LOCK_NAME).exists()
        assert not (d.parent / (ownership.NEW_PREFIX + d.name)).exists()
        assert ownership.orphaned(d) is None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    fd = ownership.orphaned(d)
    assert fd is not None
    (d / "config.json").write_text("{}")
    (d / "input").mkdir()
    ownership.remove(d, fd)
    assert not d.exists()


def test_lock_survives_in_a_forked_child_after_the_parent_closes(tmp_path: Path) -> None:
    d = tmp_path / "cp-000000000002"
    fd = ownership.claim(d)
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:
        ownership.release(fd)               # the parent is done; the child still holds it
        assert ownership.orphaned(d) is None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    taken = ownership.orphaned(d)
    assert taken is not None
    ownership.remove(d, taken)


def test_directories_being_created_or_without_a_lock_get_a_grace_period(tmp_path: Path) -> None:
    new = tmp_path / (ownership.NEW_PREFIX + "cp-000000000003")
    new.mkdir()
    assert ownership.orphaned(new) is None
    bare = tmp_path / "cp-000000000004"
    bare.mkdir()
    assert ownership.orphaned(bare) is None  # no lock yet, and young: maybe being removed
    old = time.time() - 2 * ownership.CREATING_GRACE_S
    os.utime(bare, (old, old))
    os.utime(new, (old, old))
    for d in (bare, new):
        fd = ownership.orphaned(d)
        assert fd is not None
        ownership.remove(d, fd)
        assert not d.exists()


def test_claim_refuses_an_existing_directory(tmp_path: Path) -> None:
    d = tmp_path / "cp-000000000005"
    fd = ownership.claim(d)
    try:
        try:
            ownership.claim(d)
        except FileExistsError:
            pass
        else:
            raise AssertionError("a second claim of the same id succeeded")
    finally:
        ownership.remove(d, fd)


def test_a_creator_killed_before_the_rename_is_taken_over_at_once(tmp_path: Path) -> None:
    """A creator SIGKILLed while its directory still has its temporary name: the lock it
    placed is free, so the directory is taken at once, not after the 60 s grace (one gc
    after the kill cleared everything but such a directory, at 300 iterations of the
    SIGKILL-at-every-stage race). While the creator lives, it is left alone."""
    new = tmp_path / (ownership.NEW_PREFIX + "cp-000000000006")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a creator stopped between locking and the rename
        try:
            os.close(r)
            new.mkdir(mode=0o711)
            ownership._locked_lock(new)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        assert (new / ownership.LOCK_NAME).exists()
        assert ownership.orphaned(new) is None          # a living creator
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    fd = ownership.orphaned(new)                        # young, yet its creator is dead
    assert fd is not None
    ownership.remove(new, fd)
    assert not new.exists()


def _owner_with_a_forked_child(path: Path) -> tuple[int, int, int]:
    """An owner that claims ``path``, then forks a child that keeps a copy of its descriptors
    (as every child does between fork and exec) until the returned write end is closed.
    Returns the owner's pid, the child's and that write end."""
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.close(hold_w)
            ownership.claim(path)
            child = os.fork()
            if child == 0:
                try:
                    os.close(w)
                    os.read(hold_r, 1)  # returns when the test closes its end
                finally:
                    os._exit(0)
            os.write(w, str(child).encode())
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    os.close(hold_r)
    child = int(os.read(r, 32))
    os.close(r)
    return pid, child, hold_w


def test_a_dead_owners_lock_still_held_by_its_forked_child_is_taken_once_the_child_lets_go(
        tmp_path: Path) -> None:
    """The owner SIGKILLed while a child it forked (to start a runtime command) had not
    exec'd yet: the child's copy of the lock kept it held after the owner was gone, and gc
    left the sandboxes alone as live (one gc after a SIGKILL in a loaded CI run left four).
    The lock's taker is dead, so the lock is waited for and taken once the child lets go."""
    d = tmp_path / "sandboxes" / "cp-000000000007"
    owner, _, hold = _owner_with_a_forked_child(d)
    os.kill(owner, signal.SIGKILL)
    os.waitpid(owner, 0)
    release = threading.Timer(0.3, os.close, (hold,))
    release.start()
    try:
        fd = ownership.orphaned(d)
    finally:
        release.join()
    assert fd is not None
    ownership.remove(d, fd)
    assert not d.exists()


def test_a_lock_a_dead_owners_child_keeps_holding_is_never_taken_and_gc_says_who_holds_it(
        tmp_path: Path) -> None:
    d = tmp_path / "sandboxes" / "cp-000000000008"
    owner, child, hold = _owner_with_a_forked_child(d)
    try:
        # a living taker is never waited for, however little patience is left
        assert ownership.examine(d, ownership.Patience(0)) == ownership.Finding(None)
        os.kill(owner, signal.SIGKILL)
        os.waitpid(owner, 0)
        found = ownership.examine(d, ownership.Patience(0.2))
        assert found.fd is None and found.why is not None and str(child) in found.why, found
    finally:
        os.close(hold)
    fd = ownership.orphaned(d)  # the child is gone: free
    assert fd is not None
    ownership.remove(d, fd)


def test_a_lock_let_go_by_a_living_owner_removing_its_directory_is_not_taken(
        tmp_path: Path) -> None:
    """gc opened the lock file just before the owner's remove() unlinked it and let the lock
    go: the free lock gc then gets is no longer the directory's lock, and the owner is not
    dead; gc must not take (and report removed) a sandbox its living owner is removing."""
    d = tmp_path / "sandboxes" / "cp-000000000009"
    owner = ownership.claim(d)
    seen = os.open(d / ownership.LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)   # gc's look
    os.unlink(d / ownership.LOCK_NAME)   # the owner's remove(): the lock file goes ...
    os.close(owner)                      # ... then the lock
    assert ownership._take(d, seen, ownership.Patience()).fd is None
    fd = ownership.orphaned(d)           # a lock-less, fresh directory: its grace
    assert fd is None and d.is_dir()
