"""One table mapping OCI runtime failures to ClosedPaw errors with a fix in the message."""

from __future__ import annotations

from closedpaw.errors import RuntimeFailure

__all__ = ["HINTS", "command_start_failure", "map_runtime_error", "missing_executable",
           "missing_workdir"]

# (substring of the runtime's stderr, hint shown to the user)
HINTS: tuple[tuple[str, str], ...] = (
    ("operation not permitted", "sandboxes need root; run as root or with sudo"),
    ("permission denied", "sandboxes need root; run as root or with sudo"),
    ("cgroup", "the cgroup hierarchy refused a limit; check /sys/fs/cgroup is writable by root"),
    ("no such file or directory", "a path in the bundle is missing; run 'closedpaw doctor'"),
    ("already exists", "a container with this id exists; run 'closedpaw doctor' to list them"),
)

_NOT_FOUND = ("executable file not found", "no such file or directory", "not found in $path")


def missing_workdir(stderr: str) -> bool:
    """True when the runtime could not enter the working directory (exec into a sandbox)."""
    low = stderr.lower()
    return ("cwd" in low or "working directory" in low) and any(
        s in low for s in ("no such file or directory", "not a directory", "permission denied"))


def missing_executable(stderr: str) -> bool:
    """True when the runtime failed because the command does not exist in the sandbox."""
    low = stderr.lower()
    if missing_workdir(stderr):
        return False
    if "failed to load" in low and "no such file or directory" in low:  # runsc
        return True
    return ("exec" in low or "starting container process" in low) and any(
        s in low for s in _NOT_FOUND)


def _not_executable(stderr: str) -> bool:
    low = stderr.lower()
    if missing_workdir(stderr):
        return False
    started = ("failed to load" in low or "exec:" in low or "starting container process" in low
               or "exec format error" in low)
    return started and any(s in low for s in ("permission denied", "exec format error",
                                              "is a directory"))


def command_start_failure(stderr: str) -> tuple[int, str] | None:
    """The shell's answer when the runtime could not start the command itself:
    ``(127, "command not found")`` or ``(126, "permission denied")``; ``None`` otherwise."""
    if missing_executable(stderr):
        return 127, "command not found in the sandbox"
    if _not_executable(stderr):
        return 126, "permission denied: not an executable file in the sandbox"
    return None


def _last_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "no error output"
    if 'msg="' in line:  # logrus format: keep just the message
        line = line.split('msg="', 1)[1].rsplit('"', 1)[0]
    return line[:500]


def map_runtime_error(runtime: str, action: str, stderr: str, code: int | None) -> RuntimeFailure:
    low = stderr.lower()
    hint = next((h for s, h in HINTS if s in low), "")
    detail = _last_line(stderr)
    if code is not None:
        detail = f"{detail} (exit {code})"
    return RuntimeFailure(runtime, action, detail, hint)
