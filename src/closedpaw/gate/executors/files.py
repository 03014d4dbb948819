"""``file_read`` and ``file_write`` on the host, after the gate let them through (a human saw
the exact path when the level was high).

Both judge what they opened, not the path: the descriptor's device/inode (and the directories
on the way to it) against ClosedPaw's own state unless an admin approved a critical action, and
for a read allowed at medium because it is in the workspace, that the file is really there and
has no other name (a hard link from the workspace to a file elsewhere is refused).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedpaw.errors import GateError
from closedpaw.gate.actions import FileReadParams, FileWriteParams, RiskLevel

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "read_file", "write_file"]


def _guard(ctx: ExecutionContext, rec: ActionRecord, fd: int, path: str) -> None:
    """Refuse when ``fd`` is ClosedPaw's own state and the action was not approved as
    critical (an admin saw that it is)."""
    if rec.security_level is RiskLevel.CRITICAL or ctx.protected is None:
        return
    why = ctx.protected.check_fd(fd)
    if why:
        raise GateError(f"{path} opened ClosedPaw's own state ({why}); refused: it was not "
                        "approved as critical")


def read_file(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, FileReadParams)
    p = params
    # read at medium risk only because it is inside the workspace: hold it to that, judged on
    # the file actually opened (so a symlink, or one swapped in meanwhile, cannot lead out)
    confined = rec.security_level.rank < RiskLevel.HIGH.rank
    root = ctx.settings.workspace_path.resolve()
    try:
        fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise GateError(f"cannot read {p.path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        _guard(ctx, rec, fd, p.path)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if confined and real != root and root not in real.parents:
            raise GateError(f"{p.path} is {real}, outside the workspace {root}; submit it "
                            "again with that path (it will need an approval)")
        if not stat.S_ISREG(st.st_mode):
            raise GateError(f"{p.path} is not a regular file")
        if confined and st.st_nlink > 1:
            raise GateError(f"{p.path} has {st.st_nlink} names (a hard link): what it is "
                            "cannot be judged from the workspace; submit it again at high")
        try:
            data = f.read(p.max_bytes + 1)
        except OSError as e:
            raise GateError(f"cannot read {p.path}: {e.strerror}") from None
    return {"path": p.path, "content": data[:p.max_bytes].decode("utf-8", "replace"),
            "bytes": min(len(data), p.max_bytes), "truncated": len(data) > p.max_bytes}


def write_file(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, FileWriteParams)
    p = params
    data = p.content.encode()
    parent, name = os.path.split(p.path)
    try:
        # the directory first, judged as opened; then the file in it without following a
        # symlink and without truncating, judged again before a byte changes
        dfd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise GateError(f"cannot write {p.path}: {e.strerror}") from None
    try:
        _guard(ctx, rec, dfd, parent or "/")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK | os.O_NOCTTY, 0o640, dir_fd=dfd)
        except OSError as e:
            raise GateError(f"cannot write {p.path}: {e.strerror}") from None
    finally:
        os.close(dfd)
    with os.fdopen(fd, "wb") as f:
        _guard(ctx, rec, fd, p.path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GateError(f"{p.path} is not a regular file")
        try:
            os.ftruncate(fd, 0)
            f.write(data)
            f.flush()
            os.fsync(fd)
        except OSError as e:
            raise GateError(f"cannot write {p.path}: {e.strerror}") from None
    return {"path": p.path, "bytes_written": len(data)}


ACTION_TYPES = {"file_read": read_file, "file_write": write_file}
