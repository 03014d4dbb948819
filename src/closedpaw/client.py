"""``closedpaw.client``: a small synchronous client of the HTTP API (httpx).

The CLI uses it, and so can you::

    from closedpaw.client import Client

    with Client() as api:                        # URL and token from the settings
        a = api.submit("code_execution", {"language": "python", "code": "print(1)"},
                       min_level="high")
        print(a["action_id"], a["security_level"], a["requires_approval"])
        pending = api.pending()
        api.approve(a["action_id"], a["params_sha256"])   # approve what you reviewed

Where things come from (first wins): the arguments; a :class:`~closedpaw.settings.Settings`
passed in; the ``CLOSEDPAW_API_URL`` / ``CLOSEDPAW_API_TOKEN`` environment; the defaults
(``http://127.0.0.1:8765`` and the token in ``DATA_DIR/api-token``). Errors are one tree:
:class:`~closedpaw.errors.ApiRefused` carries the server's stable ``error_code``,
:class:`~closedpaw.errors.ApiUnreachable` means no answer came. Answers are the API's JSON
(an action is the store's record: ``action_id``, ``status``, ``canonical_parameters`` ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from closedpaw.errors import ApiRefused, ApiUnreachable, ConfigError
from closedpaw.settings import Settings

if TYPE_CHECKING:
    import httpx

__all__ = ["Client"]


def _conv(conversation_id: str, verb: str = "") -> str:
    path = f"/api/conversations/{quote(conversation_id, safe='')}"
    return f"{path}/{verb}" if verb else path


def _action(action_id: str, verb: str = "") -> str:
    path = f"/api/actions/{quote(action_id, safe='')}"
    return f"{path}/{verb}" if verb else path


class Client:
    """One connection pool to the API; close it (or use ``with``)."""

    def __init__(self, base_url: str | None = None, token: str | None = None, *,
                 settings: Settings | None = None, token_file: Path | str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        s = settings if settings is not None else Settings.from_env()
        self.base_url = (base_url or s.api_base_url).rstrip("/")
        if token is None and token_file is None:
            token = s.api.api_token
        if token is None:
            path = Path(token_file) if token_file is not None else s.token_file
            try:
                token = path.read_text().strip()
            except OSError as e:
                raise ConfigError(f"cannot read the token from {path}: {e.strerror}; pass "
                                  "--token-file or set CLOSEDPAW_API_TOKEN") from None
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False,
                                  transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})

    # -- plumbing ------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        """One call; the decoded JSON answer, or :class:`ApiRefused` / :class:`ApiUnreachable`."""
        import httpx

        try:
            r = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as e:
            raise ApiUnreachable(f"cannot reach the API at {self.base_url}: {e} (is "
                                 "'closedpaw serve' running?)") from None
        try:
            data = r.json()
        except ValueError:
            raise ApiUnreachable(f"the API answered {r.status_code} with something that is "
                                 "not JSON") from None
        if r.status_code >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            err = err if isinstance(err, dict) else {}
            raise ApiRefused(r.status_code, str(err.get("code", r.status_code)),
                             str(err.get("message", r.text[:200])), err)
        return data

    # -- the API -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/api/health")
        return out

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/api/status")
        return out

    def submit(self, action_type: str, parameters: dict[str, Any], *,
               min_level: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action_type": action_type, "parameters": parameters}
        if min_level is not None:
            body["min_level"] = min_level
        out: dict[str, Any] = self.request("POST", "/api/actions", json=body)
        return out

    def list_actions(self, *, status: str | None = None, limit: int = 50,
                     offset: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        out: list[dict[str, Any]] = self.request("GET", "/api/actions",
                                                 params=params)["actions"]
        return out

    def pending(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/api/actions/pending")["actions"]
        return out

    def get_action(self, action_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", _action(action_id))
        return out

    def approve(self, action_id: str, params_sha256: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", _action(action_id, "approve"),
                                           json={"params_sha256": params_sha256})
        return out

    def reject(self, action_id: str, reason: str = "") -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", _action(action_id, "reject"),
                                           json={"reason": reason})
        return out

    def audit_logs(self, *, after_seq: int = 0, limit: int = 100) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/api/audit-logs",
                                           params={"after_seq": after_seq, "limit": limit})
        return out

    def verify_audit(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/api/audit/verify")
        return out

    # -- chat channels (issue 12) -----------------------------------------------------------
    def channels(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/api/channels")["channels"]
        return out

    def pairings(self) -> dict[str, Any]:
        """``{"pending": [...], "paired": [...]}`` (codes are never shown)."""
        out: dict[str, Any] = self.request("GET", "/api/channels/pairings")
        return out

    def approve_pairing(self, code: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/api/channels/pairings/approve",
                                           json={"code": code})
        return out

    def revoke_channel_user(self, channel: str, user: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", f"/api/channels/{quote(channel, safe='')}"
                                           "/revoke", json={"user": user})
        return out

    # -- the assistant (issue 14) ----------------------------------------------------------
    def providers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/api/providers")["providers"]
        return out

    def create_conversation(self, *, provider: str | None = None, model: str | None = None,
                            title: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {k: v for k, v in (("provider", provider), ("model", model),
                                                  ("title", title)) if v}
        out: dict[str, Any] = self.request("POST", "/api/conversations", json=body)
        return out

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation with its messages."""
        out: dict[str, Any] = self.request("GET", _conv(conversation_id))
        return out

    def cancel_turn(self, conversation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", _conv(conversation_id, "cancel"))
        return out

    def send(self, conversation_id: str, content: str
             ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run one turn: its server-sent events as (name, data), until the turn finishes or
        pauses for an approval."""
        with self._sse("POST", _conv(conversation_id, "messages"),
                       {"content": content}) as events:
            yield from events

    @contextmanager
    def conversation_events(self, conversation_id: str
                            ) -> Iterator[Iterator[tuple[str, dict[str, Any]]]]:
        """Subscribe to a conversation's turn events (resumed turns too). The subscription
        exists once the ``with`` is entered: approve, then read. Open until closed."""
        with self._sse("GET", _conv(conversation_id, "events"), None) as events:
            yield events

    @contextmanager
    def _sse(self, method: str, path: str, body: dict[str, Any] | None
             ) -> Iterator[Iterator[tuple[str, dict[str, Any]]]]:
        import json as _json

        import httpx

        def events(r: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
            name = "message"
            try:
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        yield name, _json.loads(line[6:])
                        name = "message"
            except httpx.HTTPError as e:
                raise ApiUnreachable(f"the event stream from {self.base_url} broke: {e}"
                                     ) from None
        try:
            with self._http.stream(method, path, json=body,
                                   timeout=httpx.Timeout(30, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    try:
                        data = r.json()
                    except ValueError:
                        data = {}
                    err = data.get("error") if isinstance(data, dict) else None
                    err = err if isinstance(err, dict) else {}
                    raise ApiRefused(r.status_code, str(err.get("code", r.status_code)),
                                     str(err.get("message", r.text[:200])), err)
                yield events(r)
        except httpx.HTTPError as e:
            raise ApiUnreachable(f"cannot reach the API at {self.base_url}: {e} (is "
                                 "'closedpaw serve' running?)") from None
