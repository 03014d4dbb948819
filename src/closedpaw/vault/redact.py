"""The redactor: replaces known secret values, and their base64 / hex / URL-encoded forms,
with ``[secret:NAME]``.

One :class:`Redactor` is built from (name, value) pairs (``Vault.redactor()``), and applied
at the boundaries: :meth:`Redactor.redact` for text, :meth:`Redactor.redact_obj` for JSON-like
values (audit details, API bodies, sandbox results), :class:`RedactingFilter` for log records.

Base64 is matched at each of its three alignments, so a value inside a longer encoded blob is
found too. Values shorter than :data:`MIN_ENCODED` characters are replaced only verbatim (their
encodings are too short to tell from noise).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["MIN_ENCODED", "RedactingFilter", "Redactor", "encoded_forms", "install_log_redaction"]

MIN_ENCODED = 6


def _b64_cores(data: bytes, alphabet: str) -> set[str]:
    """For each alignment (0, 1, 2 bytes before the value), the base64 characters that
    depend on the value's bytes only."""
    out: set[str] = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data).decode()
        if alphabet == "url":
            enc = enc.replace("+", "-").replace("/", "_")
        enc = enc.rstrip("=")
        # characters touching the k prefix bytes: the first ceil(8k/6) ones
        start = -(-8 * k // 6)
        total_bits = 8 * (k + len(data))
        full_chars = total_bits // 6          # characters made of data bits only at the end
        core = enc[start:full_chars]
        if len(core) >= 4:
            out.add(core)
    return out


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` the redactor looks for (the value itself included)."""
    forms = {value}
    if len(value) < MIN_ENCODED:
        return forms
    data = value.encode("utf-8")
    forms |= _b64_cores(data, "std") | _b64_cores(data, "url")
    forms.add(data.hex())
    forms.add(data.hex().upper())
    forms.add(urllib.parse.quote(value, safe=""))
    forms.add(urllib.parse.quote_plus(value, safe=""))
    forms.add(urllib.parse.quote(value))
    return {f for f in forms if f}


class Redactor:
    """Replaces every form of every known value with ``[secret:NAME]``; thread-safe, and
    :meth:`update` swaps the set of values atomically."""

    def __init__(self, secrets: Iterable[tuple[str, str]] = ()) -> None:
        self._lock = threading.Lock()
        self._write = threading.Lock()       # one writer at a time (add reads, then swaps)
        self._pattern: re.Pattern[str] | None = None
        self._names: dict[str, str] = {}     # every form -> the secret's name
        self._values: dict[str, str] = {}    # every known value -> its name
        self._pairs: tuple[tuple[str, str], ...] = ()   # every (name, value), first known first
        self._gen = 0                        # bumped by every swap: subsets built before expire
        self._subsets: dict[frozenset[str], tuple[int, Redactor]] = {}
        self.update(secrets)

    def update(self, secrets: Iterable[tuple[str, str]]) -> None:
        """Know exactly these (name, value) pairs (the set is swapped atomically)."""
        pairs = tuple(dict.fromkeys((name, value) for name, value in secrets if value))
        with self._write:
            self._swap(pairs)

    def _swap(self, pairs: tuple[tuple[str, str], ...]) -> None:
        values: dict[str, str] = {}   # a value known under several names shows the first
        for name, value in pairs:
            values.setdefault(value, name)
        names: dict[str, str] = {}
        for value, name in values.items():
            for form in encoded_forms(value):
                names.setdefault(form, name)
        pattern = (re.compile("|".join(re.escape(f) for f in sorted(names, key=len,
                                                                     reverse=True)))
                   if names else None)
        with self._lock:
            self._names, self._values, self._pattern = names, values, pattern
            self._pairs = pairs
            self._gen += 1
            self._subsets.clear()

    def add(self, name: str, value: str) -> None:
        """Know one more value (the ones known stay)."""
        if not value:
            return
        with self._write:
            with self._lock:
                if (name, value) in self._pairs:
                    return
                pairs = (*self._pairs, (name, value))
            self._swap(pairs)

    def only(self, names: Iterable[str]) -> Redactor:
        """A redactor of the named secrets alone (every known version of each), built once
        per set of names until the known values change."""
        key = frozenset(names)
        with self._lock:
            gen, hit = self._gen, self._subsets.get(key)
            if hit is not None and hit[0] == gen:
                return hit[1]
            pairs = [(n, v) for n, v in self._pairs if n in key]
        sub = Redactor(pairs)
        with self._lock:
            if self._gen == gen:
                if len(self._subsets) >= 256:   # many policies' sets: start again
                    self._subsets.clear()
                self._subsets[key] = (gen, sub)
        return sub

    def knows(self, value: str) -> bool:
        with self._lock:
            return value in self._values

    def __len__(self) -> int:
        return len(set(self._values.values()))

    def redact(self, text: str) -> str:
        with self._lock:
            pattern, names = self._pattern, self._names
        if pattern is None or not text:
            return text
        return pattern.sub(lambda m: f"[secret:{names[m.group(0)]}]", text)

    def redact_obj(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys too) redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_obj(k): self.redact_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        if isinstance(value, (bytes, bytearray)):
            return self.redact(bytes(value).decode("utf-8", "replace")).encode()
        return value

    def contains_secret(self, text: str) -> bool:
        with self._lock:
            pattern = self._pattern
        return bool(pattern and pattern.search(text))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the record's message template, each of its arguments
    (kept in place, so formatters that read ``record.args`` still work: uvicorn's access log
    does), the text of any exception and the stack. Numbers and None pass as they are; any
    other argument becomes its redacted text. Attach it to handlers:
    ``handler.addFilter(RedactingFilter(redactor))``."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def _arg(self, a: Any) -> Any:
        if a is None or isinstance(a, bool | int | float):
            return a
        return self.redactor.redact(a if isinstance(a, str) else str(a))

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        record.msg = r.redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(self._arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        try:
            record.getMessage()
        except (TypeError, ValueError, KeyError):   # a broken format string: one flat line
            record.msg = f"{record.msg} {record.args!r}"
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = r.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = r.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor, logger: logging.Logger | None = None
                          ) -> Callable[[], None]:
    """Attach a :class:`RedactingFilter` to every handler of ``logger`` (default: the root
    logger) and return a function that detaches them again. Handlers added later need their
    own filter (the server should call this after configuring logging)."""
    target = logger if logger is not None else logging.getLogger()
    flt = RedactingFilter(redactor)
    handlers = list(target.handlers)
    for h in handlers:
        h.addFilter(flt)

    def remove() -> None:
        for h in handlers:
            h.removeFilter(flt)
    return remove
