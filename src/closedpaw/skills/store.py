"""Installed skills: ``SKILLS_DIR/<name>/tree`` (the package as it was approved) and
``SKILLS_DIR/<name>/pin.json`` (its SHA-256, manifest and source), root-only.

Installing stages the package in a private directory (checked and copied entry by entry, or
unpacked from a tarball by our own writer), hashes the copy and only then moves it into place;
a run hashes a fresh private copy again and refuses it when it no longer matches the pin.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedpaw.errors import (
    SkillError,
    SkillInvalid,
    SkillNotFound,
    SkillRejected,
    SkillTampered,
)
from closedpaw.skills.manifest import MANIFEST_NAME, NAME_RE, SkillManifest, load_manifest
from closedpaw.skills.tree import copy_tree, hash_tree, unpack_tarball

__all__ = ["InstalledSkill", "SkillStore", "Staged"]


@dataclass(frozen=True)
class Staged:
    """A package checked and copied into a private directory, not installed yet."""

    manifest: SkillManifest
    sha256: str
    tree: Path
    source: str

    def summary(self) -> dict[str, Any]:
        """What an approver of the install is shown (and what the install must still match)."""
        m = self.manifest
        return {"source": self.source, "tree_sha256": self.sha256, "version": m.version,
                "description": m.description, "entry": list(m.entry),
                "runs_on": {"policy": m.policy} if m.image is None else {"image": m.image},
                "capabilities": m.capabilities()}


@dataclass(frozen=True)
class InstalledSkill:
    name: str
    sha256: str
    manifest: SkillManifest
    tree: Path
    installed_at: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "builtin": False, "sha256": self.sha256,
                "installed_at": self.installed_at, "source": self.source,
                **{k: v for k, v in self.manifest.to_dict().items() if k != "name"}}


class SkillStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- staging -----------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, source: Path) -> Iterator[Staged]:
        """Check and copy ``source`` (a directory or a tarball) into a private directory;
        yield it; remove it afterwards."""
        src = Path(os.path.abspath(source))
        with tempfile.TemporaryDirectory(prefix="closedpaw-skill-") as tmp:
            os.chmod(tmp, 0o700)
            tree = Path(tmp) / "tree"
            try:
                if src.is_dir() and not src.is_symlink():
                    copy_tree(src, tree)
                elif src.is_file() and not src.is_symlink():
                    unpack_tarball(src, tree)
                else:
                    raise SkillRejected(f"{src}: not a directory or a tarball (links are not "
                                        "followed)")
            except FileNotFoundError:
                raise SkillError(f"{src}: no such file or directory") from None
            except OSError as e:
                raise SkillRejected(f"{src}: {e.strerror or e}") from None
            try:
                manifest = load_manifest(tree / MANIFEST_NAME)
            except SkillInvalid as e:   # name the user's file, not our private copy
                where = src / MANIFEST_NAME if src.is_dir() else f"{src}:{MANIFEST_NAME}"
                raise SkillInvalid(str(where), e.problems) from None
            yield Staged(manifest, hash_tree(tree), tree, str(src))

    # -- installed skills --------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SkillNotFound(f"{name!r} is not a skill name")
        return self.root / name

    def install(self, staged: Staged, *, replace: bool = False) -> InstalledSkill:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self._dir(staged.manifest.name)
        if final.exists() and not replace:
            raise SkillError(f"skill {staged.manifest.name!r} is installed already; remove "
                             "it first (closedpaw skill rm)")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{staged.manifest.name}-", dir=self.root))
        try:
            shutil.copytree(staged.tree, tmp / "tree", symlinks=True)
            if hash_tree(tmp / "tree") != staged.sha256:
                raise SkillTampered("the staged package changed while being installed")
            installed_at = time.time()
            pin = {"name": staged.manifest.name, "sha256": staged.sha256,
                   "installed_at": installed_at, "source": staged.source}
            fd = os.open(tmp / "pin.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(pin))
                f.flush()
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(staged.manifest.name, verify=False)

    def get(self, name: str, *, verify: bool = False) -> InstalledSkill:
        d = self._dir(name)
        try:
            pin = json.loads((d / "pin.json").read_text())
        except FileNotFoundError:
            raise SkillNotFound(f"no skill {name!r} is installed (closedpaw skill list)") \
                from None
        except (OSError, ValueError) as e:
            raise SkillTampered(f"skill {name!r}: its pin is unreadable ({e})") from None
        if verify:
            actual = hash_tree(d / "tree")
            if actual != pin.get("sha256"):
                raise SkillTampered(f"skill {name!r}: its files changed after install "
                                    f"(pinned sha256 {pin.get('sha256')}, now {actual}); "
                                    "it is not run. Reinstall it to review the change.")
        manifest = load_manifest(d / "tree" / MANIFEST_NAME)
        if manifest.name != name:
            raise SkillTampered(f"skill {name!r}: its manifest now names {manifest.name!r}")
        return InstalledSkill(name, str(pin["sha256"]), manifest, d / "tree",
                              float(pin["installed_at"]), str(pin.get("source", "")))

    @contextlib.contextmanager
    def checked_copy(self, name: str) -> Iterator[InstalledSkill]:
        """A private copy of the installed tree, hashed after copying: what runs is exactly
        what was pinned, even if the store is changed meanwhile."""
        with tempfile.TemporaryDirectory(prefix="closedpaw-run-") as tmp:
            os.chmod(tmp, 0o700)
            pinned = self.get(name)
            tree = Path(tmp) / "tree"
            try:
                copy_tree(pinned.tree, tree)
            except SkillRejected as e:
                raise SkillTampered(f"skill {name!r}: its installed files are no longer "
                                    f"safe: {e}") from None
            actual = hash_tree(tree)
            if actual != pinned.sha256:
                raise SkillTampered(f"skill {name!r}: its files changed after install "
                                    f"(pinned sha256 {pinned.sha256}, now {actual}); it is "
                                    "not run. Reinstall it to review the change.")
            manifest = load_manifest(tree / MANIFEST_NAME)
            yield InstalledSkill(name, pinned.sha256, manifest, tree, pinned.installed_at,
                                 pinned.source)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / "pin.json").exists())

    def remove(self, name: str) -> None:
        d = self._dir(name)
        if not (d / "pin.json").exists():
            raise SkillNotFound(f"no skill {name!r} is installed")
        tmp = self.root / f".rm-{name}-{os.getpid()}"
        os.rename(d, tmp)
        shutil.rmtree(tmp)
