"""Named execution policies (``default``, ``python``, ``node``, ``shell``, ``multi``, ...)
loaded from YAML: the built-in ``policies/default.yaml`` with a user file on top.

A policy says, per execution type: the image, memory, cpus, pids, disk (the size of /tmp and of
the overlay's upper layer), network (``none``), readonly_root, extra tmpfs mounts and sizes,
timeout, environment, working directory, optionally the language it serves, and the secrets
of the vault it hands the sandbox (``secrets: {ENV_NAME: secret_name}`` as environment
variables, ``secret_files: {file_name: secret_name}`` as read-only files under
``/run/secrets``; the policy holds names only, the gate's code executor resolves the values
at run time). Every key is
checked; an unknown key or an impossible value is refused with a :class:`PolicyError` naming
it (``policies.python.memory: ...``). YAML is imported only when policies are loaded, so the
plain ``closedpaw run`` path never pays for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from closedpaw.errors import PolicyError, SpecError
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec, parse_size_mb

__all__ = ["KEYS", "LANGUAGES", "ExecutionPolicy", "Language", "PolicySet", "load_policies"]


@dataclass(frozen=True)
class Language:
    """How ``--lang`` runs code: the policy it picks, the file it writes, the interpreter."""

    policy: str
    filename: str
    argv: tuple[str, ...]


LANGUAGES: Mapping[str, Language] = {
    "python": Language("python", "main.py", ("python3",)),
    "node": Language("node", "main.js", ("node",)),
    "bash": Language("shell", "main.sh", ("bash",)),
}

KEYS = ("description", "image", "language", "memory", "cpus", "pids", "disk", "network",
        "readonly_root", "tmpfs", "timeout", "env", "workdir", "secrets", "secret_files",
        "usr_local")
#: a vault secret's name (the vault's own pattern)
_SECRET_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,256}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_FILE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# ResourceLimits / SandboxSpec field -> policy key, to name the key in errors.
_FIELD_KEY = {"memory_mb": "memory", "cpu_cores": "cpus", "max_processes": "pids",
              "disk_mb": "disk", "timeout_s": "timeout"}
BUILTIN = "built-in policies"


@dataclass(frozen=True)
class ExecutionPolicy:
    """One named policy, resolved into the :class:`SandboxSpec` it stands for."""

    name: str
    description: str
    spec: SandboxSpec
    language: str | None = None
    sources: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: ENV_NAME -> vault secret name; file name (under /run/secrets) -> vault secret name
    secrets: Mapping[str, str] = field(default_factory=dict)
    secret_files: Mapping[str, str] = field(default_factory=dict)

    @property
    def secret_names(self) -> set[str]:
        """Every vault secret this policy hands a sandbox."""
        return {*self.secrets.values(), *self.secret_files.values()}

    def to_dict(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": self.name, "description": self.description, "image": s.image,
            "language": self.language, "memory_mb": s.limits.memory_mb,
            "cpus": s.limits.cpu_cores, "pids": s.limits.max_processes,
            "disk_mb": s.limits.disk_mb, "network": "none",
            "readonly_root": bool(s.readonly_root), "tmpfs_mb": dict(s.tmpfs),
            "usr_local": s.usr_local,
            "timeout_s": s.limits.timeout_s, "env": dict(s.env), "workdir": s.workdir,
            "secrets": dict(self.secrets), "secret_files": dict(self.secret_files),
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class PolicySet:
    policies: Mapping[str, ExecutionPolicy]

    def names(self) -> list[str]:
        return sorted(self.policies)

    def get(self, name: str) -> ExecutionPolicy:
        try:
            return self.policies[name]
        except KeyError:
            raise PolicyError(name, f"no such policy; known: {', '.join(self.names())}") from None

    def for_language(self, lang: str, policy: str | None = None) -> ExecutionPolicy:
        """The policy to run ``lang`` code under: ``policy`` if given, else the language's
        own (python, node, shell). A policy that declares another language is refused."""
        if lang not in LANGUAGES:
            raise PolicyError("lang", f"{lang!r} is not one of {', '.join(LANGUAGES)}")
        pol = self.get(policy or LANGUAGES[lang].policy)
        if pol.language is not None and pol.language != lang:
            raise PolicyError(f"policies.{pol.name}.language",
                              f"the policy serves {pol.language}, not {lang}")
        return pol


def _size(key: str, v: object) -> int:
    if isinstance(v, bool):
        raise SpecError(key, "must be a size such as 256m or 2g")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return parse_size_mb(v, key)
    raise SpecError(key, "must be a size such as 256m or 2g")


def _number(key: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or (
            isinstance(v, float) and not math.isfinite(v)):
        raise SpecError(key, f"must be a number, got {v!r}")
    return v


def _str_map(key: str, v: object) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise SpecError(key, "must be a mapping")
    out = {}
    for k, val in v.items():
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise SpecError(f"{key}.{k}", "must be a string (quote numbers)")
        out[str(k)] = str(val)
    return out


def _secret_map(key: str, v: object, pattern: re.Pattern[str], what: str) -> dict[str, str]:
    """``{ENV_NAME or file name: vault secret name}``, each side checked."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise SpecError(key, f"must be a mapping of {what} to vault secret names")
    out = {}
    for k, val in v.items():
        if not isinstance(k, str) or not pattern.fullmatch(k):
            raise SpecError(f"{key}.{k}", f"is not a valid {what[:-1]}")
        if not isinstance(val, str) or not _SECRET_NAME.fullmatch(val):
            raise SpecError(f"{key}.{k}", "must name a vault secret (letters, digits, "
                            "'_', '.', '-', '/')")
        out[k] = val
    return out


def _resolve(name: str, merged: Mapping[str, Any], sources: tuple[str, ...]) -> ExecutionPolicy:
    """Turn one merged policy mapping into an :class:`ExecutionPolicy`, naming bad keys."""
    desc = merged.get("description", "")
    if not isinstance(desc, str):
        raise SpecError("description", "must be text")
    lang = merged.get("language")
    if lang is not None and lang not in LANGUAGES:
        raise SpecError("language", f"{lang!r} is not one of {', '.join(LANGUAGES)}")
    network = merged.get("network", "none")
    if network != "none":
        raise SpecError("network", f"{network!r} is not supported; only 'none' (loopback "
                        "only) is available")
    ro = merged.get("readonly_root")
    if ro is not None and not isinstance(ro, bool):
        raise SpecError("readonly_root", "must be true or false")
    usr_local = merged.get("usr_local", False)
    if not isinstance(usr_local, bool):
        raise SpecError("usr_local", "must be true or false")
    tmpfs_raw = merged.get("tmpfs") or {}
    if not isinstance(tmpfs_raw, Mapping):
        raise SpecError("tmpfs", "must be a mapping of absolute paths to sizes")
    tmpfs = {str(p): _size(f"tmpfs.{p}", v) for p, v in tmpfs_raw.items()}
    limits: dict[str, Any] = {}
    if "memory" in merged:
        limits["memory_mb"] = _size("memory", merged["memory"])
    if "disk" in merged:
        limits["disk_mb"] = _size("disk", merged["disk"])
    if "cpus" in merged:
        limits["cpu_cores"] = _number("cpus", merged["cpus"])
    if "pids" in merged:
        limits["max_processes"] = merged["pids"]
    if "timeout" in merged:
        limits["timeout_s"] = _number("timeout", merged["timeout"])
    try:
        lim = ResourceLimits(**limits)
    except SpecError as e:
        raise SpecError(_FIELD_KEY.get(e.field, e.field), e.problem) from None
    env = _str_map("env", merged.get("env"))
    secrets = _secret_map("secrets", merged.get("secrets"), _ENV_KEY, "variable names")
    secret_files = _secret_map("secret_files", merged.get("secret_files"), _FILE_KEY,
                               "file names")
    clash = sorted(set(secrets) & set(env))
    if clash:
        raise SpecError(f"secrets.{clash[0]}", "is also set in env; a variable comes from "
                        "one of them")
    if secret_files and any(p == "/run" or str(p).startswith("/run/") for p in tmpfs):
        raise SpecError("tmpfs", "/run is where secret_files are mounted (read-only)")
    spec = SandboxSpec(limits=lim, env=env,
                       workdir=merged.get("workdir", "/tmp"), image=merged.get("image", "host"),
                       readonly_root=ro, tmpfs=tmpfs, usr_local=usr_local)
    return ExecutionPolicy(name=name, description=desc, spec=spec, language=lang,
                           sources=sources, raw=dict(merged), secrets=secrets,
                           secret_files=secret_files)


def _parse(text: str, source: str) -> dict[str, dict[str, Any]]:
    import yaml  # lazy: only policy commands and --policy/--lang pay for it

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError("(file)", f"not valid YAML: {' '.join(str(e).split())}",
                          source) from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise PolicyError("(file)", "must be a mapping with 'version' and 'policies'", source)
    unknown = sorted(set(doc) - {"version", "policies"})
    if unknown:
        raise PolicyError(str(unknown[0]), "unknown key (known: version, policies)", source)
    if doc.get("version", 1) != 1:
        raise PolicyError("version", f"{doc.get('version')!r} is not supported (use 1)", source)
    pols = doc.get("policies") or {}
    if not isinstance(pols, Mapping):
        raise PolicyError("policies", "must be a mapping of policy names to policies", source)
    out: dict[str, dict[str, Any]] = {}
    for name, body in pols.items():
        key = f"policies.{name}"
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise PolicyError(key, "a policy name uses letters, digits, '-' and '_'", source)
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise PolicyError(key, "must be a mapping of keys to values", source)
        for k in body:
            if k not in KEYS:
                raise PolicyError(f"{key}.{k}", f"unknown key (known: {', '.join(KEYS)})",
                                  source)
        out[name] = dict(body)
    return out


def load_policies(user_file: Path | None = None, *, builtin_text: str | None = None
                  ) -> PolicySet:
    """The built-in policies with ``user_file`` (when it exists) on top."""
    if builtin_text is None:
        builtin_text = (resources.files("closedpaw.sandbox") / "policies/default.yaml"
                        ).read_text()
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = [
        (BUILTIN, _parse(builtin_text, BUILTIN))]
    if user_file is not None and user_file.exists():
        try:
            text = user_file.read_text()
        except OSError as e:
            raise PolicyError("(file)", f"unreadable: {e.strerror}", str(user_file)) from None
        layers.append((str(user_file), _parse(text, str(user_file))))
    names: list[str] = []
    for _, layer in layers:
        names += [n for n in layer if n not in names]
    base: dict[str, Any] = {}
    for _, layer in layers:
        base.update({k: v for k, v in layer.get("default", {}).items()
                     # secrets are never inherited: only the policy naming them gets them
                     if k not in ("description", "language", "secrets", "secret_files")})
    out: dict[str, ExecutionPolicy] = {}
    for name in names:
        merged = dict(base)
        sources: list[str] = []
        for src, layer in layers:
            if name in layer:
                merged.update(layer[name])
                sources.append(src)
        try:
            out[name] = _resolve(name, merged, tuple(sources))
        except SpecError as e:
            raise PolicyError(f"policies.{name}.{e.field}", e.problem,
                              sources[-1] if sources else "") from None
    return PolicySet(out)
