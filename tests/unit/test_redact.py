"""The redactor: every form of a known value is replaced, in text, JSON-like values and log
records; nothing else is touched."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse

import pytest

from closedpaw.vault import RedactingFilter, Redactor, install_log_redaction
from closedpaw.vault.redact import encoded_forms

SECRET = "sk-proj-Zq81/+=x&y%z ok"
R = Redactor([("OPENAI", SECRET), ("PIN", "4711"), ("DB", "hunter2-correct-horse")])


def forms_of(value: str) -> list[str]:
    raw = value.encode()
    out = [value, raw.hex(), raw.hex().upper(), urllib.parse.quote(value, safe=""),
           urllib.parse.quote_plus(value)]
    for prefix in (b"", b"a", b"ab", b"Authorization: Bearer "):
        for suffix in (b"", b"!", b"!?"):
            out.append(base64.b64encode(prefix + raw + suffix).decode())
            out.append(base64.urlsafe_b64encode(prefix + raw + suffix).decode().rstrip("="))
    return out


@pytest.mark.parametrize("form", forms_of(SECRET))
def test_every_encoding_of_a_value_is_replaced(form: str) -> None:
    text = f"header {form} trailer"
    out = R.redact(text)
    assert "[secret:OPENAI]" in out
    assert SECRET not in out and form not in out
    assert out.startswith("header ") and out.endswith(" trailer")


def test_short_values_are_replaced_verbatim_only() -> None:
    assert R.redact("pin 4711 then 34373131") == "pin [secret:PIN] then 34373131"
    assert encoded_forms("4711") == {"4711"}


def test_other_text_is_untouched_and_longest_form_wins() -> None:
    text = "nothing to see here: sk-proj-other, hunter2"
    assert R.redact(text) == text
    assert R.redact("hunter2-correct-horse!") == "[secret:DB]!"
    assert not R.contains_secret(text) and R.contains_secret(SECRET)
    assert len(R) == 3


def test_json_like_values_are_redacted_everywhere() -> None:
    obj = {"stdout": f"key={SECRET}\n", SECRET: [1, {"h": base64.b64encode(
        SECRET.encode()).decode()}], "n": 3, "b": SECRET.encode(), "none": None}
    out = R.redact_obj(obj)
    assert SECRET not in json.dumps(out, default=str)
    assert out["n"] == 3 and out["none"] is None
    assert "[secret:OPENAI]" in out
    assert out["b"] == b"[secret:OPENAI]"


def test_update_and_add_swap_the_known_values() -> None:
    r = Redactor()
    assert r.redact(SECRET) == SECRET
    r.add("NEW", SECRET)
    assert r.redact(SECRET) == "[secret:NEW]"
    r.update([("OTHER", "value-number-two")])
    assert r.redact(SECRET) == SECRET and r.redact("value-number-two") == "[secret:OTHER]"


def test_log_records_are_redacted_message_args_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(R))
    log = logging.getLogger("closedpaw.test.redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("calling the provider with %s", SECRET)
        log.warning("url=%s", "https://x.example/?k=" + urllib.parse.quote(SECRET, safe=""))
        try:
            raise ValueError(f"bad key {SECRET}")
        except ValueError:
            log.exception("failed")
        log.warning("broken %s %s", "only one")          # a bad format string still goes out
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out and urllib.parse.quote(SECRET, safe="") not in out
    assert out.count("[secret:OPENAI]") == 3
    assert "ValueError" in out and "broken" in out


def test_install_on_a_logger_and_remove_again() -> None:
    stream = io.StringIO()
    log = logging.getLogger("closedpaw.test.install")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    log.propagate = False
    try:
        remove = install_log_redaction(R, log)
        log.warning("token %s", SECRET)
        remove()
        log.warning("after removal: %s", "plain")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "[secret:OPENAI]" in out and SECRET not in out and "after removal: plain" in out


def test_only_redacts_the_named_secrets_every_version_and_follows_new_values() -> None:
    r = Redactor([("a", "alpha-value-1"), ("b", "bravo-value-2"), ("a", "alpha-value-0")])
    text = "alpha-value-1 alpha-value-0 bravo-value-2 charlie-value-3"
    sub = r.only({"a"})
    assert sub.redact(text) == "[secret:a] [secret:a] bravo-value-2 charlie-value-3"
    assert r.only(["a"]) is sub                       # built once per set of names
    assert r.only(()).redact(text) == text and not len(r.only(()))
    r.add("c", "charlie-value-3")                     # the values changed: built again
    assert r.only({"a", "c"}).redact(text) == "[secret:a] [secret:a] bravo-value-2 [secret:c]"
    assert r.only({"a"}) is not sub
    assert r.redact(text).count("[secret:") == 4      # the whole redactor is unchanged


def test_only_finds_a_value_stored_under_several_names_by_any_of_them() -> None:
    r = Redactor([("first", "shared-value-9")])
    r.add("held_key", "shared-value-9")           # the same value, a second name
    assert r.redact("x shared-value-9") == "x [secret:first]"   # the first name shows
    assert r.only({"held_key"}).redact("x shared-value-9") == "x [secret:held_key]"
    assert r.only({"other"}).redact("x shared-value-9") == "x shared-value-9"
