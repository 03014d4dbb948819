"""Skills: packages with a checked manifest (``skill.yaml``) and declared capabilities, pinned
by hash at install, run in a sandbox with exactly what they declared; and the built-in
``filesystem`` and ``code`` skills. The gate's ``skill_execution`` executor uses
:class:`SkillService`."""

from closedpaw.skills.manifest import SkillManifest, load_manifest, parse_manifest
from closedpaw.skills.service import BUILTINS, SecretResolver, SkillService, risk_of
from closedpaw.skills.store import InstalledSkill, SkillStore

__all__ = ["BUILTINS", "InstalledSkill", "SecretResolver", "SkillManifest", "SkillService",
           "SkillStore", "load_manifest", "parse_manifest", "risk_of"]
