"""A channel end to end, in-process: the real gate (SQLite in a temp dir, its audit log), the
real assistant on a scripted model (tests/provider_servers.py, OpenAI wire protocol on
127.0.0.1), a :class:`~closedpaw.channels.service.ChannelService` with the adapter under test
pointed at a fake platform server, all running on an asyncio loop in a thread of its own.
Shared by every platform's tests (Telegram, Slack, Discord, Matrix)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from closedpaw.assistant import Assistant
from closedpaw.channels.base import Adapter
from closedpaw.channels.core import ChannelCore
from closedpaw.channels.service import ChannelService
from closedpaw.gate import Gate
from closedpaw.providers import Gateway, OpenAIConfig
from closedpaw.settings import ChannelConfig, Settings
from tests.conftest import TEST_CGROUP, TEST_STATE
from tests.provider_servers import ProviderServer

T = TypeVar("T")


@dataclass
class ChannelRig:
    settings: Settings
    gate: Gate
    assistant: Assistant
    model: ProviderServer
    service: ChannelService
    loop: asyncio.AbstractEventLoop
    name: str

    @property
    def core(self) -> ChannelCore:
        return self.service.cores[self.name]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def audit(self, event: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.gate.audit.entries(after_seq=0, limit=100_000)
                if e.event == event]

    def audit_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.settings.audit_dir.glob("*.jsonl"))


#: code that the suite's HIGH_RULES marks high: an action its requester may approve
HIGH_CODE = "print('DANGER')"

@contextlib.contextmanager
def channel_rig(tmp_path: Path, config: ChannelConfig, adapter: Adapter, *,
                rules: str | None = None, distinct: bool = False, ttl: float = 900.0,
                stranger_audit_per_minute: int = 30) -> Iterator[ChannelRig]:
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP,
                    require_distinct_approver=distinct, approval_ttl_s=ttl,
                    channel_stranger_audit_per_minute=stranger_audit_per_minute)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    if rules:
        (s.data_dir / "rules.yaml").write_text(rules)
    model = ProviderServer("openai")
    gate = Gate(s)
    gate.start()
    gw = Gateway([OpenAIConfig(name="scripted", base_url=f"{model.url}/v1",
                               model="scripted-model", timeout_s=30)], default="scripted")
    assistant = Assistant(gate, gw)
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    service = ChannelService(s, gate, assistant, configs=[config],
                             adapters={config.name: adapter})
    rig = ChannelRig(s, gate, assistant, model, service, loop, config.name)
    try:
        rig.run(service.start())
        assert config.name in service.cores, service.errors
        gate.context = dataclasses.replace(gate.context, channels=service)   # as serve does
        yield rig
    finally:
        gate.context = dataclasses.replace(gate.context, channels=None)
        with contextlib.suppress(Exception):
            rig.run(service.stop(), timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
        assistant.close()
        gate.close()
        gw.close()
        model.close()
