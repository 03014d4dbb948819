"""Pick a driver by running a real probe container, once, and remember the answer.

``runsc --version`` proves nothing; a runtime counts as usable only after it has run a fully
hardened probe sandbox (seccomp, no caps, read-only root, limits) that printed the expected
marker. Answers are cached in memory and in ``data_dir/probe.json``, keyed by the runtime
binary (path, size, mtime), the kernel release and the bundle version, so they are re-probed
when any of those change. If no runtime passes, execution is refused (fail closed).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from closedpaw._record import Record, field_names, values
from closedpaw.errors import ClosedPawError, ConfigError, RuntimeUnavailable
from closedpaw.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    from closedpaw.sandbox.drivers.base import Driver

    Prober: TypeAlias = Callable[[Driver], tuple[bool, str]]

__all__ = ["PREFERENCE", "ProbeResult", "RuntimeRegistry"]

PREFERENCE = ("runsc", "runc")
PROBE_MARKER = "closedpaw-probe-ok"
BUNDLE_VERSION = "3"  # bumped when the bundle or the cache format changes


class ProbeResult(Record):
    runtime: str
    ok: bool
    detail: str
    key: str
    checked_at: float
    duration_ms: float
    version: str = ""


def _make_driver(name: str, settings: Settings) -> Driver:
    if name == "runc":
        from closedpaw.sandbox.drivers.runc import RuncDriver
        return RuncDriver(settings.state_dir / "runc")
    if name == "runsc":
        from closedpaw.sandbox.drivers.runsc import RunscDriver
        return RunscDriver(settings.state_dir / "runsc")
    raise ConfigError(f"runtime: unknown runtime {name!r}; choose auto, runsc or runc")


def _cache_key(driver: Driver) -> str:
    binary = getattr(driver, "binary", driver.name)
    try:
        st = os.stat(binary)
        ident = f"{binary}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        ident = str(binary)
    return f"{ident}|{os.uname().release}|{BUNDLE_VERSION}"


def _from_cache(entry: object) -> ProbeResult | None:
    """A cached probe answer, or ``None`` when the entry is missing or malformed."""
    if not isinstance(entry, dict):
        return None
    known = set(field_names(ProbeResult))
    try:
        return ProbeResult(**{k: v for k, v in entry.items() if k in known})
    except TypeError:
        return None


class RuntimeRegistry:
    """Resolves ``auto``/``runsc``/``runc`` to a probed driver, once per process."""

    def __init__(self, settings: Settings, prober: Prober) -> None:
        self.settings = settings
        self._prober = prober
        self._drivers: dict[str, Driver] = {}
        self._results: dict[str, ProbeResult] = {}
        self._lock = threading.Lock()

    @property
    def cache_file(self) -> Path:
        return self.settings.data_dir / "probe.json"

    def _load_cache(self) -> dict[str, dict[str, object]]:
        try:
            with open(self.cache_file) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_cache(self, result: ProbeResult) -> None:
        data = self._load_cache()
        data[result.runtime] = values(result)
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # the cache is an optimisation; the probe result still stands in memory

    def driver(self, name: str) -> Driver:
        if name not in self._drivers:
            self._drivers[name] = _make_driver(name, self.settings)
        return self._drivers[name]

    def probe(self, name: str, *, fresh: bool = False) -> ProbeResult:
        """Probe ``name`` (or reuse a cached answer for the same binary and kernel)."""
        with self._lock:
            if not fresh and name in self._results:
                return self._results[name]
            try:
                drv = self.driver(name)
            except RuntimeUnavailable as e:
                res = ProbeResult(name, False, str(e), "", time.time(), 0.0)
                self._results[name] = res
                return res
            key = _cache_key(drv)
            cached = _from_cache(self._load_cache().get(name))
            if not fresh and cached is not None and cached.key == key and cached.ok is True:
                res = cached
                adopt = getattr(drv, "adopt_version", None)
                if adopt is not None:
                    adopt(cached.version)
            else:
                t0 = time.perf_counter()
                try:
                    ok, detail = self._prober(drv)
                except ClosedPawError as e:
                    ok, detail = False, str(e)
                res = ProbeResult(name, ok, detail, key, time.time(),
                                  (time.perf_counter() - t0) * 1000, drv.features().version)
                if ok:
                    self._save_cache(res)
            self._results[name] = res
            return res

    def resolve(self, choice: str) -> Driver:
        """The driver for ``choice``; raises :class:`RuntimeUnavailable` if it cannot run."""
        if choice == "auto":
            reasons = []
            for name in PREFERENCE:
                res = self.probe(name)
                if res.ok:
                    return self.driver(name)
                reasons.append(f"{name}: {res.detail}")
            raise RuntimeUnavailable(
                "no sandbox runtime works, so nothing will run (fail closed). "
                + "; ".join(reasons)
                + ". Install one with 'apt-get install runsc runc' and run as root."
            )
        if choice not in PREFERENCE:
            raise ConfigError(f"runtime: {choice!r} is not one of auto, runsc, runc")
        res = self.probe(choice)
        if not res.ok:
            raise RuntimeUnavailable(f"{choice} is not usable: {res.detail}")
        return self.driver(choice)
