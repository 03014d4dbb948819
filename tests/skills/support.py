"""Helpers of the skill tests: write a skill package, snapshot a host tree."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path
from typing import Any

import yaml


def write_skill(root: Path, name: str = "probe", *, code: str = "print('hi')",
                caps: dict[str, Any] | None = None, **manifest: Any) -> Path:
    """A skill package in ``root/name``: a skill.yaml and a main.py running ``code`` (the
    arguments arrive as JSON on stdin)."""
    d = root / name
    d.mkdir(parents=True)
    m: dict[str, Any] = {"name": name, "version": "1.0.0", "description": f"the {name} skill",
                         "entry": ["python3", "/input/main.py"],
                         "inputs": {"type": "object"}, **manifest}
    if caps is not None:
        m["capabilities"] = caps
    (d / "skill.yaml").write_text(yaml.safe_dump(m))
    (d / "main.py").write_text(textwrap.dedent(code))
    return d


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: type, mode and content hash (so any change shows)."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath, n)
            st = os.lstat(p)
            body = ""
            if p.is_symlink():
                body = os.readlink(p)
            elif p.is_file():
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = f"{st.st_mode:o}:{body}"
    return out
