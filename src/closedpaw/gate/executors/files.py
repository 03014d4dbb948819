"""``file_read`` and ``file_write`` on the host, after the gate let them through (a human saw
the exact path when the level was high)."""

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
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if confined and real != root and root not in real.parents:
            raise GateError(f"{p.path} is {real}, outside the workspace {root}; submit it "
                            "again with that path (it will need an approval)")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GateError(f"{p.path} is not a regular file")
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
    try:
        fd = os.open(p.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o640)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise GateError(f"cannot write {p.path}: {e.strerror}") from None
    return {"path": p.path, "bytes_written": len(data)}


ACTION_TYPES = {"file_read": read_file, "file_write": write_file}
