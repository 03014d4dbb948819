"""ClosedPaw's own state, judged by what a path opens, not how it is spelled.

The protected set is the data directory and what is in it (the API token, ``audit/`` with its
key and log, the database, the gate key; the workspace inside it excepted) and the rules file,
recorded as (device, inode) pairs and taken afresh at every check. A path is protected when the
object it names, or any directory on the way to it, is one of them: each prefix of the path is
``stat``'d, so the kernel resolves every alias (``/proc/*/root``, ``/proc/*/cwd``,
``/proc/self/fd/N``, symlinked directories, bind mounts, which keep device and inode) before
anything is compared. A hard link has the inode of what it links to, so it is caught too.

The executors check again on the descriptor they opened (:meth:`Protected.check_fd`), so a
path swapped between classification and execution cannot lead in either.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Protected"]

Ident = tuple[int, int]
_DEPTH = 2   # files and directories recorded this deep; deeper ones are caught by an ancestor


def _ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino)


class Protected:
    def __init__(self, *, data_dir: Path | str, rules_file: Path | str | None = None,
                 workspace: Path | str | None = None,
                 extra: Iterable[Path | str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.rules_file = Path(rules_file) if rules_file else None
        self.workspace = Path(workspace) if workspace else None
        self.extra = [Path(p) for p in extra]

    # -- the set -------------------------------------------------------------------------
    def _workspace_ident(self) -> Ident | None:
        if self.workspace is None:
            return None
        try:
            return _ident(os.stat(self.workspace))
        except OSError:
            return None

    def identities(self) -> tuple[dict[Ident, str], Ident | None]:
        """(device, inode) -> what it is, for the protected set; and the workspace's."""
        ws = self._workspace_ident()
        out: dict[Ident, str] = {}

        def walk(d: Path, depth: int) -> None:
            try:
                it = os.scandir(d)
            except OSError:
                return
            with it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if _ident(st) == ws:
                        continue
                    out.setdefault(_ident(st), f"{e.path} (ClosedPaw's own state)")
                    if depth < _DEPTH and stat.S_ISDIR(st.st_mode):
                        walk(Path(e.path), depth + 1)

        try:
            out[_ident(os.stat(self.data_dir))] = (f"the data directory {self.data_dir} "
                                                   "(tokens, audit key and log, database)")
            walk(self.data_dir, 1)
        except OSError:
            pass
        for p, what in [(self.rules_file, "the rules file"),
                        *((x, "ClosedPaw's own state") for x in self.extra)]:
            if p is None:
                continue
            with contextlib.suppress(OSError):
                out[_ident(os.stat(p))] = f"{what} {p}"
        return out, ws

    # -- checks --------------------------------------------------------------------------
    def _lexical(self, path: str) -> str | None:
        """The string check, kept for paths that do not exist yet."""
        def under(p: str, root: Path) -> bool:
            r = os.path.normpath(str(root))
            return p == r or p.startswith(r.rstrip("/") + "/")

        try:
            real = os.path.realpath(path)
        except OSError:   # a prefix we may not resolve: the stat walk judges the rest
            real = path
        for p in {path, real}:
            if self.rules_file is not None and under(p, self.rules_file):
                return f"the rules file {self.rules_file}"
            if under(p, self.data_dir) and not (self.workspace is not None
                                               and under(p, self.workspace)):
                return f"the data directory {self.data_dir} (tokens, audit key, database)"
        return None

    def why(self, path: object) -> str | None:
        """Why ``path`` touches ClosedPaw's own state (always critical), or None."""
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            return None
        why = self._lexical(path)
        if why:
            return why
        ids, ws = self.identities()
        # from the object itself up to '/': the first protected one decides; reaching the
        # workspace first (its contents are excepted) ends the walk, the object itself being
        # checked already (a hard link to a protected file is the protected file)
        parts = Path(path).parts
        for n in range(len(parts), 0, -1):
            prefix = os.path.join(*parts[:n])
            try:
                st = os.stat(prefix)
            except OSError:
                continue   # not there (yet): its parent decides
            i = _ident(st)
            if i in ids:
                return ids[i] + (f" reached as {path}" if n == len(parts) else
                                 f" (through {prefix})")
            if i == ws:
                return None
        return None

    def check_fd(self, fd: int) -> str | None:
        """The same judgement on an opened descriptor: its device/inode, and the directories
        on the way to where the kernel says it is."""
        ids, ws = self.identities()
        st = os.fstat(fd)
        if _ident(st) in ids:
            return ids[_ident(st)]
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return "cannot tell where the opened file is"
        if not where.startswith("/"):
            return None   # pipes, sockets: not files of ours
        parts = Path(where).parts
        for n in range(len(parts) - 1, 0, -1):
            try:
                i = _ident(os.stat(os.path.join(*parts[:n])))
            except OSError:
                continue
            if i in ids:
                return ids[i] + f" (opened as {where})"
            if i == ws:
                return None
        return None
