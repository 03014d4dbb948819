"""``closedpaw image`` on hostile input: every refusal is one line on stderr and exit 2, never
a traceback; names with a trailing newline are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.image_craft import negative_size_tar, rewrite_manifest
from tests.integration.test_cli_images import cli, one_line_error
from tests.oci_support import Entry, layer_tar, oci_layout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CLOSEDPAW_DATA_DIR": str(tmp_path / "data")}


def test_malformed_images_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    good = [Entry("f", data=b"x")]
    deep = oci_layout(tmp_path / "deep", [layer_tar(good)])
    (deep / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(cli("image", "import", str(deep), "--name", "a", env=env),
                   "nested too deeply")
    types = oci_layout(tmp_path / "types", [layer_tar(good)])
    rewrite_manifest(types, lambda m: m.update(layers=[{"mediaType": 5}]))
    one_line_error(cli("image", "import", str(types), "--name", "b", env=env), "media type")
    loop = tmp_path / "loop.tar"
    loop.write_bytes(negative_size_tar())
    one_line_error(cli("image", "import", str(loop), "--name", "c", env=env), "negative size")
    bad_index = oci_layout(tmp_path / "idx", [layer_tar(good)])
    (bad_index / "index.json").write_text(json.dumps({"manifests": [{"size": "x"}]}))
    one_line_error(cli("image", "import", str(bad_index), "--name", "d", env=env))


@pytest.mark.parametrize("action", ["rm", "inspect"])
def test_names_with_a_newline_are_refused(action: str, env: dict[str, str]) -> None:
    one_line_error(cli("image", action, "python\n", env=env), "not an image name")


def test_import_name_with_a_newline(tmp_path: Path, env: dict[str, str]) -> None:
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("f", data=b"x")])])
    one_line_error(cli("image", "import", str(layout), "--name", "x\n", env=env),
                   "not an image name")
    p = cli("image", "list", "--json", env=env)
    assert p.returncode == 0 and [r["name"] for r in json.loads(p.stdout)] == ["host"]


def test_import_limits_come_from_the_settings(tmp_path: Path, env: dict[str, str]) -> None:
    """An ordinary image over a limit set by environment is refused by name, nothing kept."""
    layout = oci_layout(tmp_path / "l", [layer_tar([Entry("f", data=b"x" * 10_000)])])
    small = {**env, "CLOSEDPAW_IMPORT_MAX_FILE_BYTES": "4096"}
    one_line_error(cli("image", "import", str(layout), "--name", "lim", env=small),
                   "max_file_bytes")
    assert cli("image", "import", str(layout), "--name", "lim", env=env).returncode == 0
    p = cli("image", "list", "--json", env=env)
    assert sorted(r["name"] for r in json.loads(p.stdout)) == ["host", "lim"]
    assert cli("image", "rm", "lim", env=env).returncode == 0
