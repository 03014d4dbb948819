"""``serve``: run the API with uvicorn; loopback only unless remote access is asked for."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from closedpaw.errors import ConfigError
from closedpaw.settings import Settings

__all__ = ["check_host", "serve"]


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse a host that is not loopback unless ``allow_remote``."""
    if allow_remote:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"--host {host}: not a loopback address; the API would be reachable "
                          "from the network. Pass --allow-remote to do that on purpose")


def serve(settings: Settings, *, allow_remote: bool = False, log_level: str = "info") -> None:
    """Blocking: serve until SIGINT/SIGTERM. One server per data directory (a lock file)."""
    import fcntl
    import os
    import sys

    import uvicorn
    from fastapi import FastAPI

    from closedpaw.api.app import create_app
    from closedpaw.api.guard import uvicorn_config

    check_host(settings.api.api_host, allow_remote=allow_remote)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(settings.data_dir / "server.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                   0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise ConfigError(f"another 'closedpaw serve' is using {settings.data_dir}") from None

    def ready(app: FastAPI) -> None:
        if app.state.token_created:
            where = f"admin token in {settings.token_file} (new)"
        elif settings.token_file.exists():
            where = f"admin token in {settings.token_file}"
        else:
            where = (f"no {settings.token_file}: the admin exists already; make a token with "
                     "'closedpaw token create --name NAME --role admin'")
        from closedpaw.web import issue_login_link

        link = issue_login_link(app, settings.api_base_url)
        minutes = max(1, round(settings.api.web_link_ttl_s / 60))
        web_line = (f"closedpaw: web UI on {settings.api_base_url}/ ; log in once with "
                    f"{link} (one-time, {minutes} min), or with the token\n" if link else
                    f"closedpaw: web UI on {settings.api_base_url}/ (log in with a token)\n")
        sys.stderr.write(f"closedpaw: API on {settings.api_base_url}\n"
                         f"closedpaw: {where}\n{web_line}")
        sys.stderr.flush()

    from closedpaw.gate import Gate

    try:
        # built here, not in the lifespan: a bad rules file, an unreachable database or an
        # unusable audit directory is a one-line error, not a traceback from uvicorn
        orch = Gate(settings)
    except BaseException:
        os.close(lock)
        raise
    from closedpaw.providers import Gateway

    try:   # a cut, rolled-back or torn audit log, a bad providers file: one line, no start
        orch.audit.check_tail()
        gateway = Gateway.from_settings(settings, resolver=orch.context.secret_resolver)
    except BaseException:
        orch.close()
        os.close(lock)
        raise
    app = create_app(settings, gate=orch, providers=gateway, on_ready=ready)
    config = uvicorn_config(app, settings, log_level=log_level)
    unredact = _redact_logs(orch.vault.redactor)
    server = uvicorn.Server(config)
    _hang_up_stops(server)
    try:
        server.run()
    finally:
        unredact()
        gateway.close()
        orch.close()
        os.close(lock)


def _hang_up_stops(server: Any) -> None:
    """SIGHUP (the terminal of a foreground server hung up) stops the server as SIGTERM
    does: uvicorn handles only SIGINT and SIGTERM, and Python's default for SIGHUP ended the
    process on the spot, its sandbox sessions and warm pools left for the next gc."""
    import signal

    signal.signal(signal.SIGHUP, lambda _sig, frame: server.handle_exit(signal.SIGTERM, frame))


def _redact_logs(redactor: Any) -> Callable[[], None]:
    """Every log line the server writes passes the vault's redactor (it learns the values
    when the vault is unlocked, and each value stored or read later). Our own loggers get a
    stderr handler (else Python's last-resort handler would print them unfiltered); then every
    handler of ours and uvicorn's gets the filter. Returns the undo."""
    import logging
    import sys

    from closedpaw.vault import install_log_redaction

    ours = logging.getLogger("closedpaw")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    ours.addHandler(handler)
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.INFO)
    undo = [install_log_redaction(redactor, logging.getLogger(name))
            for name in ("", "closedpaw", "uvicorn", "uvicorn.error", "uvicorn.access")]

    def remove() -> None:
        for u in undo:
            u()
        ours.removeHandler(handler)
    return remove
