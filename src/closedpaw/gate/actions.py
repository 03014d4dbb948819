"""Actions: a discriminated union of typed requests, their lifecycle, and the canonical form
an approver reviews and approves by hash.

Wire shape: ``{"action_type": "code_execution", "parameters": {...}, "min_level": "high"}``.
An unknown ``action_type`` or parameters that do not parse are kept (verbatim, canonicalised)
and gated at ``high``; they can never run, since nothing knows how to execute them.
"""

from __future__ import annotations

import hashlib
import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from closedpaw.audit.events import canonical_json

__all__ = [
    "ACTION_TYPES",
    "Action",
    "ActionRequest",
    "ActionStatus",
    "ChannelMessageParams",
    "ChatParams",
    "CodeExecutionParams",
    "FileReadParams",
    "FileWriteParams",
    "NetworkRequestParams",
    "ParsedAction",
    "RiskLevel",
    "SecretReadParams",
    "SkillExecutionParams",
    "check_json_value",
    "parse_action",
]

MIB = 1024 * 1024
ARG_BYTES = 128 * 1024    # Linux MAX_ARG_STRLEN
ARGV_BYTES = 1024 * 1024  # well under ARG_MAX, leaving room for the environment


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def needs_approval(self) -> bool:
        return self.rank >= 2

    @staticmethod
    def highest(*levels: RiskLevel | None) -> RiskLevel:
        return max((lv for lv in levels if lv is not None), key=lambda lv: lv.rank)


_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}


class ActionStatus(StrEnum):
    """pending -> approved | rejected | expired; approved -> executing -> completed | failed;
    executing (or approved, not yet started) -> interrupted when the process died."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.COMPLETED,
          ActionStatus.FAILED, ActionStatus.INTERRUPTED}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _host_path(v: str) -> str:
    if not v.startswith("/") or "\0" in v:
        raise ValueError("must be an absolute path without NUL bytes")
    if posixpath.normpath(v) != v or v.startswith("//"):
        raise ValueError("must be normalised (no '.', '..', '//' or trailing '/')")
    return v


class ChatParams(_Params):
    message: str = Field(min_length=1, max_length=100_000)
    # issue 14: which conversation / provider / model the turn runs in (None: a new one, the
    # default provider and its model)
    conversation_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$")
    provider: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    model: str | None = Field(default=None, max_length=200)


class CodeExecutionParams(_Params):
    """Either ``language`` + ``code`` or an explicit ``argv``; runs in a sandbox with no
    network and no host mounts, under the named execution policy (``closedpaw policy list``;
    its limits, image and environment; ``timeout_s`` replaces the policy's timeout)."""

    language: Literal["python", "node", "bash", "shell"] | None = None
    code: str | None = None
    argv: list[str] | None = Field(default=None, min_length=1, max_length=4096)
    policy: str = Field(default="default", pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    timeout_s: float = Field(default=60.0, ge=1.0, le=3600.0)

    @model_validator(mode="after")
    def _one_form(self) -> CodeExecutionParams:
        if self.argv is not None:
            if self.language is not None or self.code is not None:
                raise ValueError("give either argv, or language and code, not both")
        elif self.language is None or self.code is None:
            raise ValueError("give language and code, or argv")
        # the kernel's limits on one argument and on the whole command line (execve E2BIG)
        args = self.command()
        if any(len(a.encode("utf-8", "surrogatepass")) >= ARG_BYTES for a in args):
            raise ValueError(f"each argument (the code included) must be under {ARG_BYTES} "
                             "bytes")
        if sum(len(a.encode("utf-8", "surrogatepass")) + 1 for a in args) > ARGV_BYTES:
            raise ValueError(f"the command line must be under {ARGV_BYTES} bytes")
        return self

    def command(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        assert self.code is not None
        return {"python": ["python3", "-c", self.code], "node": ["node", "-e", self.code],
                "bash": ["sh", "-c", self.code],
                "shell": ["sh", "-c", self.code]}[str(self.language)]


class FileReadParams(_Params):
    path: str = Field(max_length=4096)
    max_bytes: int = Field(default=MIB, ge=1, le=16 * MIB)

    _p = field_validator("path")(_host_path)


class FileWriteParams(_Params):
    path: str = Field(max_length=4096)
    content: str = Field(max_length=16 * MIB)

    _p = field_validator("path")(_host_path)


class NetworkRequestParams(_Params):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=8192)
    headers: dict[str, str] = Field(default_factory=dict, max_length=64)
    body: str | None = Field(default=None, max_length=MIB)
    timeout_s: float = Field(default=10.0, ge=0.1, le=120.0)


class SecretReadParams(_Params):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-/]{1,256}$")


class SkillExecutionParams(_Params):
    skill: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    arguments: dict[str, Any] = Field(default_factory=dict)
    install: bool = False


class ChannelMessageParams(_Params):
    """A message through a configured chat channel (docs/channels.md) to ``recipient``, the
    platform's immutable id as the channel's allowlist holds it (Slack: ``TEAM/USER``)."""

    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    recipient: str = Field(pattern=r"^[A-Za-z0-9@:._=+!#/-]{1,300}$")
    text: str = Field(min_length=1, max_length=40_000)


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatAction(_Action):
    action_type: Literal["chat"]
    parameters: ChatParams


class CodeExecutionAction(_Action):
    action_type: Literal["code_execution"]
    parameters: CodeExecutionParams


class FileReadAction(_Action):
    action_type: Literal["file_read"]
    parameters: FileReadParams


class FileWriteAction(_Action):
    action_type: Literal["file_write"]
    parameters: FileWriteParams


class NetworkRequestAction(_Action):
    action_type: Literal["network_request"]
    parameters: NetworkRequestParams


class SecretReadAction(_Action):
    action_type: Literal["secret_read"]
    parameters: SecretReadParams


class SkillExecutionAction(_Action):
    action_type: Literal["skill_execution"]
    parameters: SkillExecutionParams


class ChannelMessageAction(_Action):
    action_type: Literal["channel_message"]
    parameters: ChannelMessageParams


Action = Annotated[
    ChatAction | CodeExecutionAction | FileReadAction | FileWriteAction | NetworkRequestAction
    | SecretReadAction | SkillExecutionAction | ChannelMessageAction,
    Field(discriminator="action_type"),
]
_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)

#: action_type -> its parameters model (the rules loader checks parameter names against it)
ACTION_TYPES: dict[str, type[_Params]] = {
    "chat": ChatParams, "code_execution": CodeExecutionParams, "file_read": FileReadParams,
    "file_write": FileWriteParams, "network_request": NetworkRequestParams,
    "secret_read": SecretReadParams, "skill_execution": SkillExecutionParams,
    "channel_message": ChannelMessageParams,
}


MAX_PARAMS_BYTES = 4 * MIB
MAX_PARAMS_DEPTH = 32


def check_json_value(value: Any, *, max_bytes: int = MAX_PARAMS_BYTES,
                     max_depth: int = MAX_PARAMS_DEPTH) -> Any:
    """Refuse what could not be stored, hashed and shown faithfully: NaN/Infinity, lone UTF-16
    surrogates, nesting deeper than ``max_depth``, more than ``max_bytes`` of JSON."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
            stack.extend((k, depth + 1) for k in v)
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains a lone UTF-16 surrogate (not valid Unicode)") from None
        elif isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            raise ValueError("NaN and Infinity are not JSON")
    if len(canonical_json(value)) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes as JSON")
    return value


class ActionRequest(BaseModel):
    """What a client submits."""

    model_config = ConfigDict(extra="forbid")

    action_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    parameters: dict[str, Any] = Field(default_factory=dict)
    min_level: RiskLevel | None = None

    _p = field_validator("parameters")(check_json_value)


class ParsedAction(BaseModel):
    """The canonical form of a request: what the approver sees and what runs."""

    model_config = ConfigDict(frozen=True)

    action_type: str
    parameters: dict[str, Any]
    action: Action | None = None
    problem: str | None = None   # why it did not parse (then it is gated at high)

    @property
    def canonical(self) -> str:
        return canonical_json({"action_type": self.action_type, "parameters": self.parameters})

    @property
    def params_sha256(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p not in ("parameters",))
    return f"{loc or 'parameters'}: {err['msg']}"


def parse_action(action_type: str, parameters: dict[str, Any]) -> ParsedAction:
    """Parse into the typed union. Defaults are filled in, so the canonical parameters are
    exactly what will execute."""
    try:
        canonical_json(parameters)
    except (TypeError, ValueError):
        parameters = {"unrepresentable": repr(parameters)[:1000]}
    if action_type not in ACTION_TYPES:
        return ParsedAction(action_type=action_type, parameters=parameters,
                            problem=f"unknown action type {action_type!r}")
    try:
        act = _ADAPTER.validate_python({"action_type": action_type, "parameters": parameters})
    except ValidationError as e:
        return ParsedAction(action_type=action_type, parameters=parameters,
                            problem=f"unparseable parameters: {_first_error(e)}")
    dumped = act.parameters.model_dump(mode="json")
    return ParsedAction(action_type=action_type, parameters=dumped, action=act)
