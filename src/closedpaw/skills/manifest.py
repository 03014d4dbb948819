"""``skill.yaml``: the manifest of a skill, checked by named checks before anything is
installed or run (like the sandbox bundle's). Every problem names the file, the dotted key and
the check; an unknown key or an impossible value is refused, never ignored.

```yaml
name: wordcount                 # [a-z0-9][a-z0-9_-]{0,63}
version: 1.0.0
description: counts words
entry: [python3, /input/main.py] # argv inside the sandbox; the skill's files are at /input
policy: python                   # an execution policy, or `image: NAME` (one of them)
inputs:                          # JSON Schema of the arguments (an object)
  type: object
  properties: {text: {type: string, maxLength: 100000}}
  required: [text]
capabilities:
  paths:                         # host directories, bound at `mount`; ro unless rw
    - {host: /srv/corpus, mount: /data, mode: ro}
  secrets: [API_TOKEN]           # by name: env variables of the same name, from the vault
  network: none                  # the only value today
  limits: {memory: 256m, cpus: 0.5, pids: 64, timeout: 30, disk: 64m}
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedpaw.errors import SkillInvalid

__all__ = ["CHECKS", "MANIFEST_NAME", "PathGrant", "SkillLimits", "SkillManifest",
           "load_manifest", "parse_manifest"]

MANIFEST_NAME = "skill.yaml"
MAX_MANIFEST_BYTES = 64 * 1024
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]{1,64})?$")
_SECRET_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_POLICY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
#: where the skill's own files appear inside the sandbox (a read-only copy of the pinned tree)
SKILL_MOUNT = "/input"

_TOP = ("name", "version", "description", "entry", "policy", "image", "inputs",
        "capabilities")
_CAPS = ("paths", "secrets", "network", "limits")
_PATH_KEYS = ("host", "mount", "mode")
_LIMITS = {"memory": (16, 16384), "disk": (1, 65536), "cpus": (0.01, 64.0),
           "pids": (1, 4096), "timeout": (1.0, 3600.0)}
_SCHEMA_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_SCHEMA_KEYS = ("type", "properties", "required", "additionalProperties", "items", "enum",
                "description", "minimum", "maximum", "minLength", "maxLength", "minItems",
                "maxItems", "default", "title")

Problem = tuple[str, str]   # (dotted key, what is wrong)


@dataclass(frozen=True)
class PathGrant:
    host: str
    mount: str
    writable: bool


@dataclass(frozen=True)
class SkillLimits:
    memory_mb: int | None = None
    disk_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class SkillManifest:
    name: str
    version: str
    description: str
    entry: tuple[str, ...]
    policy: str | None
    image: str | None
    inputs: Mapping[str, Any]
    paths: tuple[PathGrant, ...] = ()
    secrets: tuple[str, ...] = ()
    network: str = "none"
    limits: SkillLimits = field(default_factory=SkillLimits)

    def capabilities(self) -> dict[str, Any]:
        """What the skill may touch, as an approver is shown it."""
        lim = {k: v for k, v in (("memory_mb", self.limits.memory_mb),
                                 ("disk_mb", self.limits.disk_mb),
                                 ("cpus", self.limits.cpus), ("pids", self.limits.pids),
                                 ("timeout_s", self.limits.timeout_s)) if v is not None}
        return {"paths": [{"host": p.host, "mount": p.mount, "mode": "rw" if p.writable
                           else "ro"} for p in self.paths],
                "secrets": list(self.secrets), "network": self.network, "limits": lim}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "entry": list(self.entry), "policy": self.policy, "image": self.image,
                "inputs": dict(self.inputs), "capabilities": self.capabilities()}


# -- the named checks: each returns the problems it found --------------------------------
def keys_known(d: Mapping[str, Any]) -> list[Problem]:
    out = [(k, f"unknown key (known: {', '.join(_TOP)})") for k in d if k not in _TOP]
    for k in ("name", "version", "description", "entry"):
        if k not in d:
            out.append((k, "is required"))
    caps = d.get("capabilities", {})
    if isinstance(caps, Mapping):
        out += [(f"capabilities.{k}", f"unknown key (known: {', '.join(_CAPS)})")
                for k in caps if k not in _CAPS]
    elif caps is not None:
        out.append(("capabilities", "must be a mapping"))
    return out


def name_valid(d: Mapping[str, Any]) -> list[Problem]:
    n = d.get("name")
    if n is None or (isinstance(n, str) and NAME_RE.match(n)):
        return []
    return [("name", f"{n!r} is not a skill name (lower-case letters, digits, '-', '_'; "
             "at most 64)")]


def version_valid(d: Mapping[str, Any]) -> list[Problem]:
    v = d.get("version")
    if v is None or (isinstance(v, str) and _VERSION_RE.match(v)):
        return []
    return [("version", f"{v!r} is not a version such as 1.2.3 (quote it in YAML)")]


def description_valid(d: Mapping[str, Any]) -> list[Problem]:
    v = d.get("description")
    if v is None or (isinstance(v, str) and 1 <= len(v) <= 2000):
        return []
    return [("description", "must be text of 1 to 2000 characters")]


def entry_valid(d: Mapping[str, Any]) -> list[Problem]:
    e = d.get("entry")
    if e is None:
        return []
    if (not isinstance(e, list) or not e or len(e) > 64
            or not all(isinstance(a, str) and a and "\0" not in a and len(a) < 4096
                       for a in e)):
        return [("entry", "must be a non-empty list (at most 64) of non-empty strings")]
    return []


def runs_on_valid(d: Mapping[str, Any]) -> list[Problem]:
    pol, img = d.get("policy"), d.get("image")
    if pol is not None and img is not None:
        return [("image", "give either policy or image, not both")]
    if pol is not None and not (isinstance(pol, str) and _POLICY_RE.match(pol)):
        return [("policy", f"{pol!r} is not a policy name")]
    if img is not None and not (isinstance(img, str) and _IMAGE_RE.match(img)):
        return [("image", f"{img!r} is not an image name")]
    return []


def _schema_problems(s: Any, key: str, depth: int = 0) -> list[Problem]:
    if depth > 8:
        return [(key, "nested deeper than 8 levels")]
    if not isinstance(s, Mapping):
        return [(key, "must be a JSON Schema object")]
    out = [(f"{key}.{k}", f"unsupported JSON Schema keyword (supported: "
            f"{', '.join(_SCHEMA_KEYS)})") for k in s if k not in _SCHEMA_KEYS]
    t = s.get("type")
    if t is not None and t not in _SCHEMA_TYPES:
        out.append((f"{key}.type", f"{t!r} is not one of {', '.join(_SCHEMA_TYPES)}"))
    props = s.get("properties")
    if props is not None:
        if not isinstance(props, Mapping):
            out.append((f"{key}.properties", "must be a mapping"))
        else:
            for pn, ps in props.items():
                out += _schema_problems(ps, f"{key}.properties.{pn}", depth + 1)
    req = s.get("required")
    if req is not None and (not isinstance(req, list)
                            or not all(isinstance(r, str) for r in req)):
        out.append((f"{key}.required", "must be a list of property names"))
    if "items" in s:
        out += _schema_problems(s["items"], f"{key}.items", depth + 1)
    ap = s.get("additionalProperties")
    if ap is not None and not isinstance(ap, bool):
        out += _schema_problems(ap, f"{key}.additionalProperties", depth + 1)
    for k in ("minimum", "maximum"):
        if k in s and (isinstance(s[k], bool) or not isinstance(s[k], int | float)):
            out.append((f"{key}.{k}", "must be a number"))
    for k in ("minLength", "maxLength", "minItems", "maxItems"):
        if k in s and (isinstance(s[k], bool) or not isinstance(s[k], int) or s[k] < 0):
            out.append((f"{key}.{k}", "must be a whole number >= 0"))
    if "enum" in s and (not isinstance(s["enum"], list) or not s["enum"]):
        out.append((f"{key}.enum", "must be a non-empty list"))
    return out


def inputs_schema_valid(d: Mapping[str, Any]) -> list[Problem]:
    s = d.get("inputs")
    if s is None:
        return []
    out = _schema_problems(s, "inputs")
    if isinstance(s, Mapping) and s.get("type") != "object":
        out.append(("inputs.type", "the arguments are an object: must be 'object'"))
    return out


def paths_valid(d: Mapping[str, Any]) -> list[Problem]:
    caps = d.get("capabilities")
    paths = caps.get("paths") if isinstance(caps, Mapping) else None
    if paths is None:
        return []
    if not isinstance(paths, list):
        return [("capabilities.paths", "must be a list of {host, mount, mode}")]
    out: list[Problem] = []
    mounts: set[str] = set()
    for i, p in enumerate(paths):
        k = f"capabilities.paths.{i}"
        if not isinstance(p, Mapping):
            out.append((k, "must be a mapping {host, mount, mode}"))
            continue
        out += [(f"{k}.{x}", f"unknown key (known: {', '.join(_PATH_KEYS)})")
                for x in p if x not in _PATH_KEYS]
        for x in ("host", "mount"):
            v = p.get(x)
            if (not isinstance(v, str) or not v.startswith("/") or v == "/" or "\0" in v
                    or ".." in v.split("/") or v.rstrip("/") != v or "//" in v):
                out.append((f"{k}.{x}", f"{v!r} must be an absolute path, not /, without "
                            "'..', '//' or a trailing /"))
        m = p.get("mount")
        if isinstance(m, str):
            if m == SKILL_MOUNT or m.startswith(SKILL_MOUNT + "/"):
                out.append((f"{k}.mount", f"{SKILL_MOUNT} holds the skill's own files"))
            if m in mounts:
                out.append((f"{k}.mount", "is mounted twice"))
            mounts.add(m)
        if p.get("mode", "ro") not in ("ro", "rw"):
            out.append((f"{k}.mode", f"{p.get('mode')!r} must be ro or rw"))
    return out


def secrets_valid(d: Mapping[str, Any]) -> list[Problem]:
    caps = d.get("capabilities")
    sec = caps.get("secrets") if isinstance(caps, Mapping) else None
    if sec is None:
        return []
    if not isinstance(sec, list):
        return [("capabilities.secrets", "must be a list of names")]
    out = [(f"capabilities.secrets.{i}", f"{s!r} is not a secret name (A-Z, 0-9, _)")
           for i, s in enumerate(sec) if not (isinstance(s, str) and _SECRET_RE.match(s))]
    if len(set(map(str, sec))) != len(sec):
        out.append(("capabilities.secrets", "names a secret twice"))
    return out


def network_none(d: Mapping[str, Any]) -> list[Problem]:
    caps = d.get("capabilities")
    net = caps.get("network", "none") if isinstance(caps, Mapping) else "none"
    if net == "none":
        return []
    return [("capabilities.network", f"{net!r}: only 'none' is supported today (a domain "
             "allowlist arrives with networked sandboxes)")]


def limits_valid(d: Mapping[str, Any]) -> list[Problem]:
    caps = d.get("capabilities")
    lim = caps.get("limits") if isinstance(caps, Mapping) else None
    if lim is None:
        return []
    if not isinstance(lim, Mapping):
        return [("capabilities.limits", "must be a mapping")]
    out: list[Problem] = []
    for k, v in lim.items():
        key = f"capabilities.limits.{k}"
        if k not in _LIMITS:
            out.append((key, f"unknown key (known: {', '.join(_LIMITS)})"))
            continue
        lo, hi = _LIMITS[k]
        try:
            n = _limit_value(k, v)
        except ValueError as e:
            out.append((key, str(e)))
            continue
        if not (lo <= n <= hi):
            out.append((key, f"must be between {lo:g} and {hi:g}, got {v!r}"))
    return out


def _limit_value(k: str, v: Any) -> float:
    if k in ("memory", "disk"):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        from closedpaw.errors import SpecError
        from closedpaw.sandbox.spec import parse_size_mb

        if isinstance(v, str):
            try:
                return parse_size_mb(v, k)
            except SpecError:
                pass
        raise ValueError(f"{v!r} is not a size such as 256m or 1g")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{v!r} is not a number")
    if k == "pids" and not isinstance(v, int):
        raise ValueError("must be a whole number")
    return float(v)


Check = Callable[[Mapping[str, Any]], list[Problem]]
CHECKS: tuple[tuple[str, Check], ...] = tuple((f.__name__, f) for f in (
    keys_known, name_valid, version_valid, description_valid, entry_valid, runs_on_valid,
    inputs_schema_valid, paths_valid, secrets_valid, network_none, limits_valid))


def parse_manifest(data: Any, source: str) -> SkillManifest:
    """Run every named check; raise :class:`SkillInvalid` listing all problems."""
    if not isinstance(data, Mapping):
        raise SkillInvalid(source, [("document", "(top)", "must be a mapping")])
    problems = [(name, key, why) for name, check in CHECKS for key, why in check(data)]
    if problems:
        raise SkillInvalid(source, problems)
    caps = data.get("capabilities") or {}
    lim = caps.get("limits") or {}
    vals = {k: _limit_value(k, v) for k, v in lim.items()}
    return SkillManifest(
        name=data["name"], version=data["version"], description=data["description"],
        entry=tuple(data["entry"]), policy=data.get("policy"), image=data.get("image"),
        inputs=dict(data.get("inputs") or {"type": "object"}),
        paths=tuple(PathGrant(p["host"], p["mount"], p.get("mode", "ro") == "rw")
                    for p in caps.get("paths") or []),
        secrets=tuple(caps.get("secrets") or ()), network=caps.get("network", "none"),
        limits=SkillLimits(
            memory_mb=int(vals["memory"]) if "memory" in vals else None,
            disk_mb=int(vals["disk"]) if "disk" in vals else None,
            cpus=vals.get("cpus"), pids=int(vals["pids"]) if "pids" in vals else None,
            timeout_s=vals.get("timeout")))


def load_manifest(path: Path) -> SkillManifest:
    """Read and check ``path`` (a ``skill.yaml``): not a link, a regular file, 64 KiB at
    most, YAML without anchors tricks beyond safe_load."""
    import os
    import stat

    import yaml

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SkillInvalid(str(path), [("readable", "(file)", e.strerror or str(e))]) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SkillInvalid(str(path), [("readable", "(file)", "not a regular file")])
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SkillInvalid(str(path), [("readable", "(file)",
                                        f"larger than {MAX_MANIFEST_BYTES} bytes")])
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SkillInvalid(str(path), [("yaml", "(file)", f"not valid YAML: "
                                        f"{' '.join(str(e).split())[:200]}")]) from None
    return parse_manifest(data, str(path))


def validate_arguments(schema: Mapping[str, Any], value: Any, key: str = "arguments") -> None:
    """Check ``value`` against the manifest's (supported subset of) JSON Schema; raise
    :class:`~closedpaw.errors.InvalidRequest` naming the dotted key."""
    from closedpaw.errors import InvalidRequest

    t = schema.get("type")
    types = {"object": Mapping, "array": list, "string": str, "boolean": bool,
             "null": type(None)}
    if t == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif t is not None:
        ok = isinstance(value, types[t])
    else:
        ok = True
    if not ok:
        raise InvalidRequest(f"{key}: must be of type {t}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidRequest(f"{key}: must be one of {schema['enum']}")
    big = 1 << 62
    if isinstance(value, str) and not (schema.get("minLength", 0) <= len(value)
                                       <= schema.get("maxLength", big)):
        raise InvalidRequest(f"{key}: length out of bounds")
    if isinstance(value, int | float) and not isinstance(value, bool) and not (
            schema.get("minimum", float("-inf")) <= value <= schema.get("maximum",
                                                                         float("inf"))):
        raise InvalidRequest(f"{key}: out of bounds")
    if isinstance(value, list):
        if not (schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", big)):
            raise InvalidRequest(f"{key}: number of items out of bounds")
        if "items" in schema:
            for i, v in enumerate(value):
                validate_arguments(schema["items"], v, f"{key}.{i}")
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            if r not in value:
                raise InvalidRequest(f"{key}.{r}: is required")
        ap = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                validate_arguments(props[k], v, f"{key}.{k}")
            elif ap is False:
                raise InvalidRequest(f"{key}.{k}: unknown property")
            elif isinstance(ap, Mapping):
                validate_arguments(ap, v, f"{key}.{k}")
