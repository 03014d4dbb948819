"""The skills service the gate hands its ``skill_execution`` executor: the built-in skills
(``filesystem``, ``code``) and the installed ones, their risk levels, installing and running.

The level of a run derives from what the skill declared: no host paths, no secrets and no
network -> ``medium``; any host path (``ro`` or ``rw``), a secret or the network -> ``high``.
The built-in ``filesystem`` skill is ``medium`` for list/read/search and ``high`` for write;
``code`` is ``medium`` (a sandbox without network or host mounts). Installing is ``high``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedpaw.errors import (
    InvalidRequest,
    NotConfigured,
    SkillError,
    SkillNotFound,
    SpecError,
)
from closedpaw.skills.manifest import SkillManifest, validate_arguments
from closedpaw.skills.store import SkillStore

if TYPE_CHECKING:
    from closedpaw.sandbox import SandboxManager
    from closedpaw.sandbox.spec import SandboxSpec
    from closedpaw.settings import Settings

__all__ = ["BUILTINS", "SecretResolver", "SkillService"]

#: name -> the secret's value; raises (fails closed) when it cannot
SecretResolver = Callable[[str], str]
FsAudit = Callable[[str, dict[str, Any]], None]

BUILTINS: dict[str, dict[str, Any]] = {
    "filesystem": {
        "description": "list, read, write and search files beneath the allowlisted roots "
                       "(CLOSEDPAW_FS_ROOTS) on the host",
        "inputs": {"type": "object", "required": ["op", "path"],
                   "additionalProperties": False,
                   "properties": {
                       "op": {"type": "string", "enum": ["list", "read", "write", "search"]},
                       "path": {"type": "string", "maxLength": 4096},
                       "content": {"type": "string"},
                       "encoding": {"type": "string", "enum": ["text", "base64"]},
                       "pattern": {"type": "string", "minLength": 1, "maxLength": 1000}}},
    },
    "code": {
        "description": "run python, node or bash code in a sandbox under an execution policy "
                       "(no network, no host mounts)",
        "inputs": {"type": "object", "required": ["language", "code"],
                   "additionalProperties": False,
                   "properties": {
                       "language": {"type": "string", "enum": ["python", "node", "bash"]},
                       "code": {"type": "string", "maxLength": 100000},
                       "policy": {"type": "string", "maxLength": 64}}},
    },
}


def risk_of(m: SkillManifest) -> tuple[str, str]:
    """(level, reason) of running a skill with this manifest."""
    why = []
    if m.paths:
        rw = [p.host for p in m.paths if p.writable]
        why.append(f"host paths {', '.join(p.host for p in m.paths)}"
                   + (f" (writable: {', '.join(rw)})" if rw else ""))
    if m.secrets:
        why.append(f"secrets {', '.join(m.secrets)}")
    if m.network != "none":
        why.append(f"network {m.network}")
    if why:
        return "high", f"skill {m.name} declares " + "; ".join(why)
    return "medium", f"skill {m.name} declares no host paths, secrets or network"


class SkillService:
    def __init__(self, settings: Settings, *, sandboxes: Callable[[], SandboxManager]) -> None:
        self.settings = settings
        self.store = SkillStore(settings.skills_path)
        self._sandboxes = sandboxes

    # -- what there is -------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        out = [self.show(n) for n in sorted(BUILTINS)]
        for n in self.store.names():
            try:
                out.append(self.store.get(n).to_dict())
            except SkillError as e:
                out.append({"name": n, "builtin": False, "error": str(e)})
        return out

    def show(self, name: str) -> dict[str, Any]:
        if name in BUILTINS:
            b = BUILTINS[name]
            extra = ({"roots": [str(r) for r in self.settings.skills.roots]}
                     if name == "filesystem" else {})
            return {"name": name, "builtin": True, "description": b["description"],
                    "inputs": b["inputs"], **extra}
        return self.store.get(name).to_dict()

    # -- the gate asks these at submission -------------------------------------------------
    def check_request(self, name: str, arguments: dict[str, Any], install: bool) -> \
            tuple[str, str]:
        """Refuse a request that could never run (unknown skill, arguments that do not fit
        its schema, an install whose package is not what the approver is shown) and return
        its (level, reason)."""
        if install:
            return self.check_install(name, arguments)
        if name in BUILTINS:
            validate_arguments(BUILTINS[name]["inputs"], arguments)
            if name == "filesystem":
                if arguments["op"] == "write":
                    return "high", "the filesystem skill writes a host file"
                return "medium", f"the filesystem skill {arguments['op']}s beneath its roots"
            return "medium", "the code skill runs in a sandbox without network or host mounts"
        m = self.store.get(name).manifest
        validate_arguments(m.inputs, arguments)
        return risk_of(m)

    def check_install(self, name: str, arguments: dict[str, Any]) -> tuple[str, str]:
        src = arguments.get("source")
        if not isinstance(src, str) or not src.startswith("/"):
            raise InvalidRequest("arguments.source: the absolute path of the package (a "
                                 "directory or a tarball)")
        if name in BUILTINS:
            raise InvalidRequest(f"skill: {name!r} is a built-in skill")
        with self.store.stage(Path(src)) as st:
            if st.manifest.name != name:
                raise InvalidRequest(f"skill: the package is named {st.manifest.name!r}")
            expect = st.summary()
            if arguments != expect:
                raise InvalidRequest("arguments: must be exactly what the package declares, so "
                                     "the approver sees it: " + json.dumps(expect,
                                                                           sort_keys=True))
        return "high", f"installs skill {name}: " + risk_of(st.manifest)[1]

    def install_request(self, source: Path) -> dict[str, Any]:
        """The parameters of the ``skill_execution`` action that installs ``source``."""
        with self.store.stage(source) as st:
            return {"skill": st.manifest.name, "install": True, "arguments": st.summary()}

    # -- the executor calls these once approved --------------------------------------------
    def install(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Install exactly what was approved: the package is staged again and its hash and
        declarations must equal the approved ones."""
        src = arguments.get("source")
        if not isinstance(src, str):
            raise InvalidRequest("arguments.source: missing")
        with self.store.stage(Path(src)) as st:
            if st.summary() != arguments or st.manifest.name != name:
                raise SkillError(f"{src} changed since the install was approved (now sha256 "
                                 f"{st.sha256}); nothing was installed: submit it again")
            inst = self.store.install(st)
        return {"installed": inst.to_dict()}

    def run(self, name: str, arguments: dict[str, Any], *, secrets: SecretResolver | None,
            fs_audit: FsAudit | None = None) -> dict[str, Any]:
        if name == "filesystem":
            from closedpaw.skills.builtin.fs import FileSystemSkill

            validate_arguments(BUILTINS[name]["inputs"], arguments)
            s = self.settings.skills
            fs = FileSystemSkill(s.roots, max_bytes=s.fs_max_bytes,
                                 max_entries=s.fs_max_entries, audit=fs_audit)
            return fs.call(arguments)
        if name == "code":
            validate_arguments(BUILTINS[name]["inputs"], arguments)
            mgr = self._sandboxes()
            pol = mgr.policies().for_language(arguments["language"], arguments.get("policy"))
            if pol.spec.limits.network_enabled:
                raise SkillError(f"policy {pol.name!r} enables the network")
            return mgr.run_code(arguments["language"], arguments["code"],
                                spec=pol.spec).to_dict()
        with self.store.checked_copy(name) as sk:
            m = sk.manifest
            validate_arguments(m.inputs, arguments)
            spec = self.spec_for(m, sk.tree, secrets)
            result = self._sandboxes().run(list(m.entry), spec,
                                           stdin=json.dumps(arguments).encode())
            out = result.to_dict()
            out["skill"] = {"name": name, "version": m.version, "sha256": sk.sha256}
            return out

    def spec_for(self, m: SkillManifest, tree: Path,
                 secrets: SecretResolver | None) -> SandboxSpec:
        """The sandbox of a run: the policy's (or image's) spec, the declared limits, the
        skill's files read-only at /input, exactly the declared host paths and secrets."""
        from closedpaw.sandbox.spec import HostBind, SandboxSpec

        mgr = self._sandboxes()
        base = mgr.spec_for(m.policy or "default") if m.image is None else \
            SandboxSpec(image=m.image)
        if base.limits.network_enabled:
            raise SkillError(f"skill {m.name}: policy {m.policy!r} enables the network; "
                             "skills declare network none")
        lim = base.limits
        ml = m.limits
        lim = replace(
            lim, memory_mb=ml.memory_mb if ml.memory_mb is not None else lim.memory_mb,
            disk_mb=ml.disk_mb if ml.disk_mb is not None else lim.disk_mb,
            cpu_cores=ml.cpus if ml.cpus is not None else lim.cpu_cores,
            max_processes=ml.pids if ml.pids is not None else lim.max_processes,
            timeout_s=ml.timeout_s if ml.timeout_s is not None else lim.timeout_s)
        env = dict(base.env)
        if m.secrets:
            if secrets is None:
                raise NotConfigured(f"skill {m.name} declares secrets ({', '.join(m.secrets)}) "
                                    "but no vault is configured: it is not run")
            for s in m.secrets:
                env[s] = secrets(s)
        try:
            binds = tuple(HostBind(Path(p.host), p.mount, p.writable) for p in m.paths)
            return replace(base, limits=lim, env=env, binds=binds, input_path=tree)
        except SpecError as e:
            raise SkillError(f"skill {m.name}: {e}") from None

    def remove(self, name: str) -> None:
        if name in BUILTINS:
            raise SkillNotFound(f"{name!r} is a built-in skill; it cannot be removed")
        self.store.remove(name)
