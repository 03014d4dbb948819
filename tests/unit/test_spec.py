from pathlib import Path

import pytest

from closedpaw.errors import ConfigError, SpecError
from closedpaw.sandbox.spec import ExecRequest, ResourceLimits, SandboxSpec, parse_size_mb
from closedpaw.settings import Settings


def test_defaults_match_the_design() -> None:
    lim = ResourceLimits()
    assert (lim.cpu_cores, lim.memory_mb, lim.disk_mb) == (1.0, 512, 1024)
    assert lim.network_enabled is False
    assert lim.timeout_s == 1800
    assert lim.output_cap_bytes == 1024 * 1024


@pytest.mark.parametrize(("field", "value"), [
    ("cpu_cores", 0), ("cpu_cores", -1), ("cpu_cores", float("nan")), ("memory_mb", 1),
    ("memory_mb", 1.5), ("disk_mb", 0), ("max_processes", 0), ("timeout_s", 0),
    ("output_cap_bytes", 0), ("memory_mb", True), ("memory_mb", "512"),
])
def test_impossible_limits_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(SpecError) as e:
        ResourceLimits(**{field: value})  # type: ignore[arg-type]
    assert e.value.field == field


def test_network_cannot_be_enabled_yet_fail_closed() -> None:
    with pytest.raises(SpecError, match="network_enabled"):
        ResourceLimits(network_enabled=True)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(SpecError, match=r"limits\.memroy_mb: unknown field"):
        ResourceLimits.from_dict({"memroy_mb": 5})
    with pytest.raises(SpecError, match="bogus"):
        SandboxSpec.from_dict({"bogus": 1})
    spec = SandboxSpec.from_dict({"limits": {"memory_mb": 64}, "workdir": "/tmp"})
    assert spec.limits.memory_mb == 64


@pytest.mark.parametrize("workdir", ["tmp", "/tmp/../etc", "/a\0b"])
def test_bad_workdir(workdir: str) -> None:
    with pytest.raises(SpecError, match="workdir"):
        SandboxSpec(workdir=workdir)


@pytest.mark.parametrize("env", [{"1X": "a"}, {"A B": "x"}, {"X": "a\0b"}, {"X": 1}])
def test_bad_env(env: dict[str, object]) -> None:
    with pytest.raises(SpecError, match="env"):
        SandboxSpec(env=env)  # type: ignore[arg-type]


@pytest.mark.parametrize("image", ["", "Python", "../x", "a/b", "x" * 64, 3])
def test_bad_image_names(image: object) -> None:
    with pytest.raises(SpecError, match=r"^image"):
        SandboxSpec(image=image)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tmpfs", "key"), [
    ({"relative": 8}, "tmpfs.relative"), ({"/a/../b": 8}, "tmpfs./a/../b"),
    ({"/proc/x": 8}, "tmpfs./proc/x"), ({"/tmp": 8}, "tmpfs./tmp"), ({"/": 8}, "tmpfs./"),
    ({"/cache": 0}, "tmpfs./cache"), ({"/cache": "8m"}, "tmpfs./cache"),
])
def test_bad_tmpfs(tmpfs: dict[str, object], key: str) -> None:
    with pytest.raises(SpecError) as e:
        SandboxSpec(tmpfs=tmpfs)  # type: ignore[arg-type]
    assert e.value.field == key


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_bad_code_file_names(name: str) -> None:
    with pytest.raises(SpecError, match="code_files"):
        SandboxSpec(code_files={name: "print(1)"})


def test_readonly_root_must_be_a_bool() -> None:
    with pytest.raises(SpecError, match="readonly_root"):
        SandboxSpec(readonly_root="yes")  # type: ignore[arg-type]
    assert SandboxSpec(image="python", readonly_root=True).readonly_root is True


def test_paths_are_coerced() -> None:
    s = SandboxSpec(input_path="/x", output_dir="/y")  # type: ignore[arg-type]
    assert s.input_path == Path("/x") and s.output_dir == Path("/y")


@pytest.mark.parametrize("argv", ["echo hi", [], ["a\0"], [1]])
def test_exec_request_wants_an_argv_list(argv: object) -> None:
    with pytest.raises(SpecError, match="argv"):
        ExecRequest(argv=argv)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "mb"), [("512", 512), ("256m", 256), ("2g", 2048),
                                          ("65536k", 64), ("1k", 1), ("1GiB", 1024)])
def test_parse_size(text: str, mb: int) -> None:
    assert parse_size_mb(text) == mb


@pytest.mark.parametrize("text", ["", "x", "5x", "-1m", "1.5g"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_size_mb(text, "--memory")


def test_settings_from_env_and_errors() -> None:
    s = Settings.from_env({"CLOSEDPAW_RUNTIME": "runc", "CLOSEDPAW_MAX_SANDBOXES": "3",
                           "CLOSEDPAW_STATE_DIR": "/tmp/s"})
    assert (s.sandbox.runtime, s.sandbox.max_sandboxes, str(s.state_dir)) == ("runc", 3, "/tmp/s")
    with pytest.raises(ConfigError, match="CLOSEDPAW_MAX_SANDBOXES"):
        Settings.from_env({"CLOSEDPAW_MAX_SANDBOXES": "many"})
    with pytest.raises(ConfigError, match="runtime"):
        Settings.of(runtime="docker")
    with pytest.raises(ConfigError, match="nope"):
        Settings().with_(nope=1)
