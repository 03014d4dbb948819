"""Pool and snapshot settings: environment parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedpaw.errors import ConfigError
from closedpaw.settings import Settings


def test_pool_settings_from_env() -> None:
    s = Settings.from_env({"CLOSEDPAW_POOL_SIZE": "5", "CLOSEDPAW_POOL_IDLE_TIMEOUT_S": "2.5",
                           "CLOSEDPAW_SNAPSHOT_DIR": "/srv/snaps"})
    assert (s.pools.pool_size, s.pools.pool_idle_timeout_s, s.snapshots) == (
        5, 2.5, Path("/srv/snaps"))
    d = Settings.of(state_dir=Path("/run/x"))
    assert d.snapshots == Path("/run/x/snapshots") and d.pools.pool_size == 2
    assert d.pools.pool_settle_s == 0.05
    assert Settings.from_env({"CLOSEDPAW_POOL_SETTLE_S": "0"}).pools.pool_settle_s == 0


@pytest.mark.parametrize(("env", "match"), [
    ({"CLOSEDPAW_POOL_SIZE": "0"}, "pool_size"),
    ({"CLOSEDPAW_POOL_SIZE": "many"}, "CLOSEDPAW_POOL_SIZE"),
    ({"CLOSEDPAW_POOL_IDLE_TIMEOUT_S": "-1"}, "pool_idle_timeout_s"),
    ({"CLOSEDPAW_POOL_IDLE_TIMEOUT_S": "soon"}, "CLOSEDPAW_POOL_IDLE_TIMEOUT_S"),
    ({"CLOSEDPAW_POOL_SETTLE_S": "-0.1"}, "pool_settle_s"),
    ({"CLOSEDPAW_POOL_SETTLE_S": "11"}, "pool_settle_s"),
    ({"CLOSEDPAW_POOL_SETTLE_S": "later"}, "CLOSEDPAW_POOL_SETTLE_S"),
])
def test_bad_pool_settings_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env(env)
