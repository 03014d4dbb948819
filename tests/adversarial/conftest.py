"""Fixtures of the adversarial suite. The shared ``mgr`` and ``runtime`` fixtures come from
tests/conftest.py; helpers live in adversarial_support.py."""

from __future__ import annotations

import pytest
from adversarial_support import uid_processes


@pytest.fixture
def uid_baseline() -> dict[int, tuple[str, str, str]]:
    """Host processes of the sandbox uid (65534) that existed before the test."""
    return uid_processes()
