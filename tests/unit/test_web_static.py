"""The web UI's static files: every module parses (node), the templates hold no inline script
or event-handler attribute (the CSP would block them anyway), and no script parses server
text as HTML (innerHTML and friends are not used at all)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from closedpaw.web import STATIC_DIR

TEMPLATES = STATIC_DIR.with_name("templates")
JS = sorted(STATIC_DIR.glob("*.js"))


def test_the_pages_modules_exist() -> None:
    assert {p.stem for p in JS} == {"common", "chat", "approvals", "audit", "sandboxes",
                                    "providers"}


@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_each_module_parses(path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: 'apt-get install nodejs' (make test does this)",
                    pytrace=False)
    r = subprocess.run([node, "--input-type=module", "--check"], input=path.read_bytes(),
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_no_module_parses_text_as_html(path: Path) -> None:
    text = path.read_text()
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "setTimeout('", 'setTimeout("'):
        assert bad not in text, f"{path.name} uses {bad}"


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.html")), ids=lambda p: p.name)
def test_templates_hold_no_inline_script_or_handler(path: Path) -> None:
    text = path.read_text()
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", text, re.S):
        assert 'src="/static/' in m.group(1) and not m.group(2).strip(), m.group(0)
    assert not re.search(r"\son[a-z]+\s*=", text), "an inline event handler"
    assert "style=" not in text
