"""One table from foreign provider errors (SDK exceptions, HTTP statuses, transport errors) to
our :class:`~closedpaw.errors.ProviderError` subtree, with how-to-fix text.

Every adapter calls :func:`map_error` at its boundary; nothing else translates errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

from closedpaw.errors import (
    ClosedPawError,
    ContextTooLong,
    ModelNotFound,
    ProviderAuthError,
    ProviderBadOutput,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

__all__ = ["TABLE", "classify", "map_error"]

#: kind -> (our class, how to fix it). ``classify`` finds the kind.
TABLE: dict[str, tuple[type[ProviderError], str]] = {
    "timeout": (ProviderTimeout, "the model is slow or stuck; raise the provider's timeout_s "
                "or use a smaller model"),
    "unreachable": (ProviderUnavailable, "is the server running at its base_url? "
                    "'closedpaw providers test' checks it"),
    "server": (ProviderUnavailable, "the provider had an internal error; try again later"),
    "auth": (ProviderAuthError, "check the API key (api_key: secret:NAME resolves "
             "CLOSEDPAW_SECRET_NAME)"),
    "rate_limit": (ProviderRateLimited, "wait and try again, or raise the plan's limits"),
    "model_not_found": (ModelNotFound, "list the models with 'closedpaw providers list' "
                        "(for ollama: 'ollama pull NAME')"),
    "context": (ContextTooLong, "start a new conversation or shorten the message"),
    "malformed": (ProviderBadOutput, "the server does not speak the expected protocol; check "
                  "the provider type and base_url"),
    "bad_request": (ProviderError, "the provider refused the request"),
}

_CONTEXT = re.compile(r"context|too long|too many tokens|maximum.*tokens|token limit|"
                      r"prompt is too long|exceeds", re.I)
_MODEL = re.compile(r"model.*(not found|does not exist|unknown)|no such model|"
                    r"not_found_error|not found", re.I)


def _names(exc: BaseException) -> list[str]:
    return [c.__name__ for c in type(exc).__mro__]


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    resp = getattr(exc, "response", None)
    v = getattr(resp, "status_code", None)
    return v if isinstance(v, int) else None


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    headers: Any = getattr(resp, "headers", None)
    if headers is None:
        return None
    for key in ("retry-after", "Retry-After"):
        raw = headers.get(key) if hasattr(headers, "get") else None
        if raw is not None:
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def classify(exc: BaseException) -> str:
    """The kind of a foreign error (a key of :data:`TABLE`)."""
    names = _names(exc)
    if isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
        return "timeout"
    status = _status(exc)
    msg = _message(exc)
    if status is not None:
        if status in (401, 403):
            return "auth"
        if status == 429:
            return "rate_limit"
        if status == 404:
            return "model_not_found"
        if status in (400, 413, 422) and _CONTEXT.search(msg):
            return "context"
        if status == 400 and _MODEL.search(msg):
            return "model_not_found"
        if status >= 500:
            return "server"
        if 200 <= status < 300:
            return "malformed"
        return "bad_request"
    if isinstance(exc, ConnectionError) or any(n in ("ConnectError", "APIConnectionError",
                                                     "NetworkError", "RemoteProtocolError")
                                               for n in names):
        return "unreachable"
    if isinstance(exc, json.JSONDecodeError | KeyError) or any(
            n in ("ValidationError", "DecodingError", "APIResponseValidationError",
                  "UnknownApiResponseError") for n in names):
        return "malformed"
    if isinstance(exc, ValueError):
        return "malformed"
    return "server"


def map_error(exc: BaseException, provider: str, *, retry_after: Any = None
              ) -> ClosedPawError:
    """Our error for a foreign one (our own errors pass through unchanged)."""
    if isinstance(exc, ClosedPawError):
        return exc
    kind = classify(exc)
    cls, hint = TABLE[kind]
    status = _status(exc)
    msg = (f"HTTP {status}: " if status else f"{type(exc).__name__}: ") + _message(exc)
    if cls is ProviderRateLimited:
        ra = _retry_after(exc)
        if ra is None and retry_after is not None:
            try:
                ra = max(0.0, float(retry_after))
            except (TypeError, ValueError):
                ra = None
        return ProviderRateLimited(msg, provider=provider, hint=hint, retry_after=ra)
    return cls(msg, provider=provider, hint=hint)
